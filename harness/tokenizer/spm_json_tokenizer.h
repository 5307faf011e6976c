// The SentencePiece-style pipeline of a HF tokenizer.json (Llama-2, Mistral, Gemma, Phi-3;
// docs/tokenizers.md §11): the files transformers' convert_slow_tokenizer.py writes for a
// sentencepiece BPE model. Encoding, as huggingface/tokenizers runs it:
//   1. added tokens with normalized: false are cut out of the raw text (added_tokens.h);
//   2. each remaining segment is normalized (Prepend "▁", Replace " " → "▁", NFC, NFKC, a
//      Sequence of them) and tokens with normalized: true are cut out of the result, matched as
//      their own normalized content (added_vocabulary.rs, extract_and_normalize);
//   3. the pre-tokenizer: none, Split steps, and/or a final Metaspace (spaces → replacement;
//      prepend_scheme always / first / never; split on the replacement or not);
//   4. BPE with byte_fallback, fuse_unk, unk_token (bpe_model.h) on each piece;
//   5. the post-processor's ids around the result (TemplateProcessing).
// Decoding: each id's token string (an added token's content), special ones dropped on request,
// through the decoder chain (Replace, ByteFallback, Fuse, Strip, Metaspace, Sequence), joined.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "harness/tokenizer/added_token_index.h"
#include "harness/tokenizer/added_tokens.h"
#include "harness/tokenizer/bpe_model.h"
#include "harness/tokenizer/pre_tokenizer.h"
#include "harness/tokenizer/tokenizer.h"

namespace kvlab::harness {

struct SpmNormalizerStep {
  enum class Kind { prepend, replace, nfc, nfkc };
  Kind kind = Kind::prepend;
  std::string pattern;  // replace: the literal string replaced
  std::string content;  // prepend: what is prepended; replace: the replacement
};

enum class PrependScheme { always, first, never };

struct MetaspaceConfig {
  std::string replacement = "\xE2\x96\x81";  // "▁"
  PrependScheme prepend_scheme = PrependScheme::always;
  bool split = true;
};

struct SpmDecoderStep {
  enum class Kind { replace, byte_fallback, fuse, strip, metaspace };
  Kind kind = Kind::fuse;
  std::string pattern, content;       // replace: literal pattern → content; strip: the character stripped
  std::size_t start = 0, stop = 0;    // strip: at most this many at the start / end of each token
  MetaspaceConfig metaspace;          // metaspace
};

struct SpmJsonTokenizerParts {
  std::string source;  // file name for describe()
  std::unique_ptr<BpeModel> model;
  std::vector<AddedToken> added_tokens;
  std::vector<SpmNormalizerStep> normalizer;
  PreTokenizer splits;                       // Split steps of the pre-tokenizer (Gemma), before Metaspace
  bool has_splits = false;                   // whether `splits` has any step (describe())
  std::optional<MetaspaceConfig> metaspace;  // the last pre-tokenizer step; neither: the normalized text is one word
  std::vector<SpmDecoderStep> decoder;       // empty: tokens joined with " " (HF's rule without a decoder)
  bool has_decoder = false;
  std::vector<std::int32_t> prefix, suffix;  // post-processor ids around the text (Llama-2: <s> before)
};

// Normalizes `text` with `steps` (exposed for tests).
std::string spm_normalize(const std::vector<SpmNormalizerStep>& steps, std::string_view text);

// Runs the decoder chain on token strings and joins the result (exposed for tests).
std::string spm_decode_tokens(const std::vector<SpmDecoderStep>& steps, std::vector<std::string> tokens);

class SpmJsonTokenizer final : public Tokenizer {
 public:
  explicit SpmJsonTokenizer(SpmJsonTokenizerParts parts);

  std::vector<std::int32_t> encode(std::string_view text, bool add_special = true) const override;
  // A continuation is the middle of a text: its start gets no "▁" — no Prepend normalizer step
  // and no Metaspace "first" prepend — so context + question encode as the concatenation would
  // (docs/tokenizers.md §8). Segments after a literal special token inside it follow the usual
  // rules (legacy Prepend: "▁"). Metaspace "always" still prepends, as HF does on every piece.
  std::vector<std::int32_t> encode_continuation(std::string_view text) const override;
  std::string decode(std::span<const std::int32_t> ids, bool skip_special = false) const override;
  int vocab_size() const override { return added_.vocab_size(); }
  std::optional<std::int32_t> token_id(std::string_view token) const override;
  std::string token(std::int32_t id) const override;
  bool is_special(std::int32_t id) const override;
  std::string token_bytes(std::int32_t id) const override;
  std::optional<std::int32_t> bos_id() const override;
  std::string describe() const override;

  // The words the model sees for already-normalized text (no added tokens in it); at_start: the
  // text begins at offset 0 of the input (Metaspace prepend_scheme "first").
  std::vector<std::string> pre_tokenize(std::string_view normalized, bool at_start = true) const;

 private:
  std::vector<std::int32_t> encode_impl(std::string_view text, bool add_special, bool at_start) const;
  void encode_plain(std::string_view normalized, bool at_start, std::vector<std::int32_t>& ids) const;

  SpmJsonTokenizerParts p_;
  AddedTokenMatcher raw_matcher_;         // normalized: false
  AddedTokenMatcher normalized_matcher_;  // normalized: true, content normalized
  std::vector<SpmNormalizerStep> no_prepend_;  // the normalizer without Prepend steps (continuations)
  AddedTokenIndex added_;  // and the vocabulary size
};

}  // namespace kvlab::harness
