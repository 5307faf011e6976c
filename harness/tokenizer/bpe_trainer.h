// A small byte-level BPE trainer for the tokenizers of generated tiny test models: pre-tokenize
// the corpus with the model family's regex, count adjacent symbol pairs over the distinct words
// (weighted by frequency), and merge the most frequent pair until the vocabulary is full. Ties
// go to the pair with the smaller (left id, right id), so the result depends only on the input.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kvlab::harness {

struct BpeTrainResult {
  std::vector<std::string> vocab;                            // id → token in the byte-level alphabet; id b < 256 is byte b
  std::vector<std::pair<std::string, std::string>> merges;  // in rank order
};

// Trains up to `n_tokens` (≥ 256) vocabulary entries: the 256 byte symbols plus one per merge
// whose result is new. Stops early when no adjacent pair is left in the corpus. `nfc` applies
// NFC to the corpus first (Qwen2). A corpus that is not valid UTF-8 is a kvlab::Error.
BpeTrainResult train_byte_level_bpe(std::string_view corpus, std::string_view regex, bool nfc, int n_tokens);

}  // namespace kvlab::harness
