#define PCRE2_CODE_UNIT_WIDTH 8
#include "harness/tokenizer/regex_splitter.h"

#include <pcre2.h>

#include "core/error.h"

namespace kvlab::harness {

struct RegexSplitter::Code {
  pcre2_code* code = nullptr;
  ~Code() { pcre2_code_free(code); }
};

namespace {

std::string pcre2_message(int error) {
  PCRE2_UCHAR buffer[256];
  pcre2_get_error_message(error, buffer, sizeof buffer);
  return reinterpret_cast<const char*>(buffer);
}

struct MatchData {
  pcre2_match_data* data;
  explicit MatchData(const pcre2_code* code) : data(pcre2_match_data_create_from_pattern(code, nullptr)) {
    if (!data) fail("pcre2: out of memory creating match data");
  }
  ~MatchData() { pcre2_match_data_free(data); }
};

// Length in bytes of the UTF-8 sequence whose lead byte is `b` (text is valid UTF-8).
std::size_t sequence_length(unsigned char b) { return b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4; }

}  // namespace

RegexSplitter::RegexSplitter(std::string_view pattern, std::string_view source, bool literal)
    : pattern_(pattern), code_(std::make_unique<Code>()) {
  int error = 0;
  PCRE2_SIZE offset = 0;
  // PCRE2_LITERAL admits PCRE2_UTF but not PCRE2_UCP (which only matters for escapes anyway).
  const std::uint32_t options = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP);
  code_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern_.data()), pattern_.size(), options,
                              &error, &offset, nullptr);
  if (!code_->code) {
    fail("{}: pre-tokenizer regex rejected by PCRE2 at offset {}: {} (pattern: {})", source, offset,
         pcre2_message(error), pattern_);
  }
  // JIT is an optimisation only: a build without it (or a pattern it declines) runs interpreted.
  jit_ = pcre2_jit_compile(code_->code, PCRE2_JIT_COMPLETE) == 0;
}

RegexSplitter::~RegexSplitter() = default;
RegexSplitter::RegexSplitter(RegexSplitter&&) noexcept = default;
RegexSplitter& RegexSplitter::operator=(RegexSplitter&&) noexcept = default;

std::vector<ByteSpan> RegexSplitter::matches(std::string_view text) const {
  std::vector<ByteSpan> out;
  MatchData md(code_->code);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  std::size_t start = 0;
  while (start < text.size()) {
    int rc = pcre2_match(code_->code, subject, text.size(), start, PCRE2_NO_UTF_CHECK, md.data, nullptr);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
      // A very long run (e.g. 100k spaces against \s+(?!\S)) can exhaust the JIT's 32 KiB
      // stack; the interpreter keeps its backtracking state on the heap.
      rc = pcre2_match(code_->code, subject, text.size(), start, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md.data,
                       nullptr);
    }
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) fail("pre-tokenizer regex failed at byte {}: {} (pattern: {})", start, pcre2_message(rc), pattern_);
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.data);
    const std::size_t b = ov[0], e = ov[1];
    if (e > b) {
      out.push_back({b, e});
      start = e;
    } else {
      start = b + sequence_length(static_cast<unsigned char>(text[b < text.size() ? b : text.size() - 1]));
    }
  }
  return out;
}

}  // namespace kvlab::harness
