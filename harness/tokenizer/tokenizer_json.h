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
#include "harness/tokenizer/spm_json_tokenizer.h"

namespace kvlab::harness {

// `source` names the file in errors; describe() shows its file name.
std::unique_ptr<BpeTokenizer> parse_tokenizer_json(std::string_view json_text, std::string_view source = "tokenizer.json");
std::unique_ptr<BpeTokenizer> load_tokenizer_json(const std::filesystem::path& file);

// Whether the tokenizer.json text describes a byte-level tokenizer (a ByteLevel pre-tokenizer
// step somewhere). False for the sentencepiece-converted files of Mistral repos (Metaspace);
// true for text that is not JSON, so that the full parser reports it.
bool tokenizer_json_is_byte_level(std::string_view json_text);

// A SentencePiece-style tokenizer.json (Llama-2, Mistral, Gemma, Phi-3; docs/tokenizers.md §11):
// model BPE with byte_fallback / fuse_unk / unk_token; normalizer null, Prepend, Replace (String
// pattern), NFC, NFKC or a Sequence of them; pre_tokenizer null, Metaspace (last), Split or a
// Sequence of them; decoder null, Replace, ByteFallback, Fuse, Strip, Metaspace or a Sequence;
// post_processor and added_tokens as for byte-level files. Anything else is a kvlab::Error
// naming the file and the field (an unknown normalizer by its type name).
std::unique_ptr<SpmJsonTokenizer> parse_spm_tokenizer_json(std::string_view json_text, std::string_view source = "tokenizer.json");

// Whether the file is SentencePiece-style: no ByteLevel pre-tokenizer or decoder, and a
// Prepend / Replace normalizer, a Metaspace pre-tokenizer or decoder, a ByteFallback / Fuse /
// Strip / Replace decoder, or model.byte_fallback. Anything else goes to the byte-level parser
// (and its errors).
bool tokenizer_json_is_spm_style(std::string_view json_text);

// Either parser, chosen by tokenizer_json_is_spm_style.
std::unique_ptr<Tokenizer> parse_any_tokenizer_json(std::string_view json_text, std::string_view source = "tokenizer.json");

}  // namespace kvlab::harness
