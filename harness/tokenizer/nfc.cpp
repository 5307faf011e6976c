#include "harness/tokenizer/nfc.h"

#include <unicode/bytestream.h>
#include <unicode/normalizer2.h>

#include "core/error.h"

namespace kvlab::harness {

namespace {

std::string normalize(std::string_view text, bool compatibility) {
  const char* name = compatibility ? "NFKC" : "NFC";
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* nfc =
      compatibility ? icu::Normalizer2::getNFKCInstance(status) : icu::Normalizer2::getNFCInstance(status);
  if (U_FAILURE(status)) fail("ICU: cannot load the {} normalizer: {}", name, u_errorName(status));
  const icu::StringPiece piece(text.data(), static_cast<std::int32_t>(text.size()));
  if (nfc->isNormalizedUTF8(piece, status) && U_SUCCESS(status)) return std::string(text);
  status = U_ZERO_ERROR;
  std::string out;
  icu::StringByteSink<std::string> sink(&out, static_cast<std::int32_t>(text.size()));
  nfc->normalizeUTF8(0, piece, sink, nullptr, status);
  if (U_FAILURE(status)) fail("ICU: {} normalization failed: {}", name, u_errorName(status));
  return out;
}

}  // namespace

std::string to_nfc(std::string_view text) { return normalize(text, false); }
std::string to_nfkc(std::string_view text) { return normalize(text, true); }

}  // namespace kvlab::harness
