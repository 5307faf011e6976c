// Tokenizers for generated tiny test models, trained on a corpus the caller supplies (the
// project's own text), written in the real checkpoints' file layouts so that the loaders run
// exactly the code a downloaded checkpoint runs:
//  - llama:   byte-level BPE trained with the Llama-3 regex; tokenizer.json with Split +
//             ByteLevel, ignore_merges, merges as ["a", "b"] pairs, TemplateProcessing BOS;
//             specials <|begin_of_text|> <|end_of_text|> <|start_header_id|> <|end_header_id|>
//             <|eot_id|> after the BPE vocabulary.
//  - qwen2:   the same trainer with the Qwen2 regex and NFC; legacy "a b" string merges (so both
//             merge formats are exercised); specials <|endoftext|> <|im_start|> <|im_end|>; no BOS.
//  - mistral: sentencepiece BPE with byte_fallback (tokenizer.model) in the v0.3 layout:
//             <unk> 0, <s> 1, </s> 2, control [INST] 3, [/INST] 4.
// Each also gets a tokenizer_config.json with bos/eos, added_tokens_decoder and a
// "chat_template" carrying the family's markers (--chat-template auto renders it). Files are
// written atomically; the output depends only on (family, corpus, vocab_size).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kvlab::harness {

struct TinyTokenizerInfo {
  int vocab_size = 0;             // largest id + 1 (≤ the requested size when the corpus runs out of pairs)
  std::optional<int> bos_id;      // what encode(add_special = true) prepends
  std::vector<int> eos_ids;       // generation stop tokens
  std::string chat_template_name; // the literal layout its template resembles: "llama3", "qwen2", "mistral-v0.3"
};

// family: "llama" | "qwen2" | "mistral". vocab_size: the total, specials included (llama ≥ 261,
// qwen2 ≥ 259; mistral must also cover the corpus's distinct characters, sentencepiece's rule).
// seed: seeds sentencepiece's generator; the BPE trainers are deterministic without it.
// dir is created when missing.
TinyTokenizerInfo write_tiny_tokenizer(const std::filesystem::path& dir, std::string_view family, std::string_view corpus,
                                       int vocab_size, std::uint64_t seed);

}  // namespace kvlab::harness
