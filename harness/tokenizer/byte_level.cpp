#include "harness/tokenizer/byte_level.h"

#include <array>

#include "harness/tokenizer/utf8.h"

namespace kvlab::harness {
namespace {

struct Tables {
  std::array<char32_t, 256> to_cp{};
  std::array<std::string, 256> to_utf8;
  std::array<int, 512> from_cp{};  // the image lies below U+0100 + 68; -1 = not in the image

  Tables() {
    from_cp.fill(-1);
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      to_cp[b] = printable ? static_cast<char32_t>(b) : next++;
      from_cp[to_cp[b]] = b;
      append_utf8(to_utf8[b], to_cp[b]);
    }
  }
};

const Tables& tables() {
  static const Tables t;
  return t;
}

}  // namespace

char32_t byte_to_unicode(unsigned char b) { return tables().to_cp[b]; }

std::optional<unsigned char> unicode_to_byte(char32_t cp) {
  if (cp >= 512 || tables().from_cp[cp] < 0) return std::nullopt;
  return static_cast<unsigned char>(tables().from_cp[cp]);
}

std::string byte_level_encode(std::string_view bytes) {
  const Tables& t = tables();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (const char c : bytes) out += t.to_utf8[static_cast<unsigned char>(c)];
  return out;
}

std::optional<std::string> byte_level_decode(std::string_view mapped) {
  std::string out;
  out.reserve(mapped.size());
  if (first_invalid_utf8(mapped)) return std::nullopt;
  std::size_t i = 0;
  while (i < mapped.size()) {
    const auto b = unicode_to_byte(next_code_point(mapped, i));
    if (!b) return std::nullopt;
    out.push_back(static_cast<char>(*b));
  }
  return out;
}

}  // namespace kvlab::harness
