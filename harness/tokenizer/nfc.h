// Unicode NFC (canonical composition), the normalizer of Qwen2's tokenizer.json
// (docs/tokenizers.md §1), via ICU's Normalizer2.
#pragma once

#include <string>
#include <string_view>

namespace kvlab::harness {

// NFC form of valid UTF-8 `text`; already-normalized text (the common case) is returned after a
// quick check without rebuilding it.
std::string to_nfc(std::string_view text);

// NFKC form (compatibility composition), for the NFKC normalizer of tokenizer.json.
std::string to_nfkc(std::string_view text);

}  // namespace kvlab::harness
