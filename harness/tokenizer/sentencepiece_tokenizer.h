// SentencePiece tokenizer.model (Mistral; docs/tokenizers.md §9) through Debian's
// libsentencepiece, reached only through spm::Library, a dlopen'ed module (its bundled protobuf
// clashes with libtorch's; sentencepiece_library.h). Control and unknown pieces that appear
// literally in the text ("<s>", and "[INST]" / "[/INST]" where they are control pieces, as in
// Mistral v0.3) are split out first and mapped to their ids — sentencepiece itself never
// produces control ids from text.
// User-defined pieces need no such step: sentencepiece matches them itself.
//
// The dummy prefix: sentencepiece puts "▁" before the text it encodes. Like HF's Metaspace
// with prepend_scheme "first" and like mistral-common, only the text segment at offset 0 of
// the input gets it; segments after a special token, and encode_continuation(), are encoded
// with a copy of the model whose add_dummy_prefix is off. So "<s>[INST] hi[/INST]" gives
// <s> [INST] ▁hi [/INST], the same ids mistral-common builds. Decoding mirrors it: only the
// first emitted text loses its leading "▁" (HF's decoder rule), so decode(encode(s)) == s —
// except for a literal U+2581 '▁' in s, which decodes as a space (as in sentencepiece and HF),
// and, in models with remove_extra_whitespaces (not Mistral's), collapsed whitespace.
#pragma once

#include <memory>
#include <string>

#include "harness/tokenizer/added_tokens.h"
#include "harness/tokenizer/sentencepiece_library.h"
#include "harness/tokenizer/sp_model_proto.h"
#include "harness/tokenizer/tokenizer.h"

namespace kvlab::harness {

class SentencePieceTokenizer final : public Tokenizer {
 public:
  // `serialized`: the bytes of tokenizer.model; `source` names it in errors.
  SentencePieceTokenizer(std::string_view serialized, std::string source);
  ~SentencePieceTokenizer() override;

  std::vector<std::int32_t> encode(std::string_view text, bool add_special = true) const override;
  std::vector<std::int32_t> encode_continuation(std::string_view text) const override;
  std::string decode(std::span<const std::int32_t> ids, bool skip_special = false) const override;
  int vocab_size() const override;
  std::optional<std::int32_t> token_id(std::string_view token) const override;
  std::string token(std::int32_t id) const override;
  bool is_special(std::int32_t id) const override;
  std::string token_bytes(std::int32_t id) const override;
  std::optional<std::int32_t> bos_id() const override;
  std::string describe() const override;

 private:
  std::vector<std::int32_t> encode_impl(std::string_view text, bool add_special, bool at_text_start) const;
  void check_id(std::int32_t id) const;

  std::string source_;
  SpModelFlags flags_;
  std::unique_ptr<spm::Processor> start_;      // the model as stored
  std::unique_ptr<spm::Processor> continued_;  // add_dummy_prefix off
  AddedTokenMatcher specials_;  // control and unknown pieces, matched literally
};

std::unique_ptr<SentencePieceTokenizer> load_sentencepiece(const std::filesystem::path& file);

}  // namespace kvlab::harness
