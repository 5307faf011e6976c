// The byte-level BPE pipeline of a HF tokenizer.json (docs/tokenizers.md §1): added tokens
// split out first → NFC (when the normalizer asks for it) → pre-tokenizer → byte → unicode map
// → BPE → post-processor ids around the result. Decoding maps vocab strings back to bytes (the
// ByteLevel decoder) and writes added tokens as their literal content.
#pragma once

#include <memory>

#include "harness/tokenizer/added_token_index.h"
#include "harness/tokenizer/added_tokens.h"
#include "harness/tokenizer/bpe_model.h"
#include "harness/tokenizer/pre_tokenizer.h"
#include "harness/tokenizer/tokenizer.h"

namespace kvlab::harness {

struct BpeTokenizerParts {
  std::string source;  // file name for describe() and errors
  std::unique_ptr<BpeModel> model;
  std::vector<AddedToken> added_tokens;
  bool nfc = false;  // normalizer NFC (Qwen2)
  PreTokenizer pre_tokenizer;
  std::vector<std::int32_t> prefix;  // post-processor ids before the text (Llama-3: BOS)
  std::vector<std::int32_t> suffix;  // and after it
};

class BpeTokenizer final : public Tokenizer {
 public:
  explicit BpeTokenizer(BpeTokenizerParts parts);

  std::vector<std::int32_t> encode(std::string_view text, bool add_special = true) const override;
  std::string decode(std::span<const std::int32_t> ids, bool skip_special = false) const override;
  int vocab_size() const override { return added_.vocab_size(); }
  std::optional<std::int32_t> token_id(std::string_view token) const override;
  std::string token(std::int32_t id) const override;
  bool is_special(std::int32_t id) const override;
  std::string token_bytes(std::int32_t id) const override;
  std::optional<std::int32_t> bos_id() const override;
  std::string describe() const override;

  // The pre-tokenizer's pieces of `text` (raw UTF-8, after NFC), for tests and diagnostics.
  std::vector<std::string> pre_tokenize(std::string_view text) const;

 private:
  BpeTokenizerParts p_;
  AddedTokenMatcher matcher_;
  AddedTokenIndex added_;  // and the vocabulary size
};

}  // namespace kvlab::harness
