// tokenizer_config.json's "clean_up_tokenization_spaces": transformers' decode then removes the
// space a word-level tokenizer left before punctuation and contractions (" ." → ".", " n't" →
// "n't"). Llama-3's config sets it true, so its decoded answers lose those spaces in transformers;
// kvlab's decode does the same when the config asks (docs/tokenizers.md §13).
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "harness/tokenizer/tokenizer.h"

namespace kvlab::harness {

// transformers' PreTrainedTokenizerBase.clean_up_tokenization (tokenization_utils_base.py): ten
// literal replacements, each over the whole string, in its order.
std::string clean_up_tokenization(std::string_view text);

// `inner` with decode() followed by clean_up_tokenization; every other call is inner's, and
// describe() says ", clean_up_tokenization_spaces".
std::unique_ptr<Tokenizer> with_clean_up_decoding(std::unique_ptr<Tokenizer> inner);

}  // namespace kvlab::harness
