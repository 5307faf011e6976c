// The tokenizer interface of the harness (docs/tokenizers.md): byte-level BPE from a HF
// tokenizer.json (Llama-3, Qwen2/2.5) or SentencePiece from tokenizer.model (Mistral). Ids are
// token ids of the checkpoint's vocabulary; text is UTF-8 (encode rejects invalid UTF-8 with a
// kvlab::Error naming the byte offset). Implementations are immutable after loading and safe to
// call from several threads.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace kvlab::harness {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // add_special: add what the tokenizer's post-processor adds (Llama-3: BOS <|begin_of_text|>;
  // Qwen2: nothing; Mistral sentencepiece: <s>). Added/special tokens appearing literally in
  // `text` are always matched first (HF default), so a prompt that already contains the BOS
  // literal must be encoded with add_special = false (double-BOS pitfall, docs/tokenizers.md §8).
  virtual std::vector<std::int32_t> encode(std::string_view text, bool add_special = true) const = 0;
  // Encodes text that continues an earlier encoded piece (the question after the context):
  // never adds special tokens, and for sentencepiece does not insert the dummy-prefix "▁" a text
  // start gets. For byte-level BPE identical to encode(text, false).
  virtual std::vector<std::int32_t> encode_continuation(std::string_view text) const { return encode(text, false); }
  // skip_special: drop special tokens (BPE: added tokens marked special; sentencepiece: control
  // and unknown pieces) instead of writing their literal text. Invalid UTF-8 produced by a
  // partial byte sequence is replaced by U+FFFD. An id outside [0, vocab_size()) is an error.
  virtual std::string decode(std::span<const std::int32_t> ids, bool skip_special = false) const = 0;
  virtual int vocab_size() const = 0;                                               // largest id + 1
  virtual std::optional<std::int32_t> token_id(std::string_view token) const = 0;  // exact vocab or added-token lookup
  virtual std::string token(std::int32_t id) const = 0;  // the vocabulary string ("" for an unused id; error outside the range)
  virtual bool is_special(std::int32_t id) const = 0;    // what decode(skip_special = true) drops
  // The bytes `id` stands for in the text it was encoded from, before decode's UTF-8 repair and
  // clean-up: byte-level BPE's byte-decoded vocabulary string (possibly part of a character),
  // a sentencepiece piece with its space marker "▁" as ' ' and <0xNN> as that byte, an added
  // token's content. token_offsets.h aligns these with the text. Error outside the range.
  virtual std::string token_bytes(std::int32_t id) const = 0;
  virtual std::optional<std::int32_t> bos_id() const = 0;  // what add_special prepends, if anything
  // Provenance line, e.g. "tokenizer.json byte-level BPE, 128256 tokens, pre-tokenizer llama3, ignore_merges".
  virtual std::string describe() const = 0;
};

// Loads dir/tokenizer.json when present — byte-level BPE, or SentencePiece-style (Metaspace /
// Prepend normalizer, byte_fallback; docs/tokenizers.md §11) — else dir/tokenizer.model
// (sentencepiece). One exception: when both exist and tokenizer.json is not byte-level (Mistral
// repos ship a Metaspace conversion beside tokenizer.model, the reference of docs/tokenizers.md §9),
// tokenizer.model is used. Error naming the folder when neither exists; a malformed file is an
// error naming the file and what is wrong (never silently skipped for the other file). When
// tokenizer_config.json sets clean_up_tokenization_spaces, decode applies transformers' clean-up
// (clean_up_decoding.h).
std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& model_dir);

}  // namespace kvlab::harness
