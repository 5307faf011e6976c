// Reads a HF tokenizer.json holding a byte-level BPE (docs/tokenizers.md §1–6): model BPE
// with merges as "a b" strings or ["a", "b"] pairs and optional ignore_merges; normalizer null,
// NFC or a Sequence of NFC; pre_tokenizer Split / ByteLevel / a Sequence of them (ByteLevel
// last); post_processor null, ByteLevel, TemplateProcessing or a Sequence of them; decoder
// null, ByteLevel or a Sequence of it; added_tokens. Anything else — not JSON, no model, a
// model that is not BPE, a merge with a part missing from the vocab, a legacy merge that does
// not split into exactly two parts, an unknown normalizer / pre-tokenizer / post-processor /
// decoder type, a regex PCRE2 rejects — is a kvlab::Error naming the file and the field.
#pragma once

#include <filesystem>
#include <memory>
#include <string_view>

#include "harness/tokenizer/bpe_tokenizer.h"

namespace kvlab::harness {

// `source` names the file in errors; describe() shows its file name.
std::unique_ptr<BpeTokenizer> parse_tokenizer_json(std::string_view json_text, std::string_view source = "tokenizer.json");
std::unique_ptr<BpeTokenizer> load_tokenizer_json(const std::filesystem::path& file);

// Whether the tokenizer.json text describes a byte-level tokenizer (a ByteLevel pre-tokenizer
// step somewhere). False for the sentencepiece-converted files of Mistral repos (Metaspace);
// true for text that is not JSON, so that the full parser reports it.
bool tokenizer_json_is_byte_level(std::string_view json_text);

}  // namespace kvlab::harness
