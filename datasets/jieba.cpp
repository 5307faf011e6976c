#include "datasets/jieba.h"

#include <array>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "core/error.h"
#include "core/read_file.h"
#include "datasets/py_str.h"

namespace kvlab::datasets {

namespace {

namespace fs = std::filesystem;

constexpr std::string_view kDictFile = "dict.txt";
constexpr std::string_view kStartFile = "finalseg/prob_start.py";
constexpr std::string_view kTransFile = "finalseg/prob_trans.py";
constexpr std::string_view kEmitFile = "finalseg/prob_emit.py";

// finalseg.MIN_FLOAT: the log probability of an emission or transition the model does not list.
// Sums of it absorb ordinary log probabilities in rounding, so ties are common on unusual text;
// they are broken exactly as Python's max over (prob, state) tuples does (see below).
constexpr double kMinFloat = -3.14e100;

// The HMM states, numbered in the order of their letters (B < E < M < S): Python's
// max((prob, state), ...) breaks a tie in prob by the larger letter, which is then the larger index.
constexpr int kB = 0, kE = 1, kM = 2, kS = 3;
constexpr std::string_view kStateLetters = "BEMS";
// finalseg.PrevStatus: the states allowed before each state.
constexpr std::array<std::array<int, 2>, 4> kPrevStates = {{{kE, kS}, {kB, kM}, {kM, kB}, {kS, kE}}};

// The Han range of jieba's regexes (re_han_default, finalseg.re_han).
constexpr char32_t kHanFirst = 0x4E00, kHanLast = 0x9FD5;

bool is_han(char32_t c) { return c >= kHanFirst && c <= kHanLast; }
bool is_ascii_digit(char32_t c) { return c >= '0' && c <= '9'; }
bool is_ascii_alnum(char32_t c) { return is_ascii_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
// re_han_default's class: [\u4E00-\u9FD5a-zA-Z0-9+#&\._%\-].
bool in_han_block(char32_t c) {
  return is_han(c) || is_ascii_alnum(c) || c == '+' || c == '#' || c == '&' || c == '.' || c == '_' || c == '%' ||
         c == '-';
}

// Strict UTF-8 (what Python's bytes.decode('utf-8') accepts): the length of the code point at
// text[i], or 0 when it is malformed, overlong, a surrogate or beyond U+10FFFF.
std::size_t utf8_unit(std::string_view text, std::size_t i, char32_t* out = nullptr) {
  const auto b0 = static_cast<unsigned char>(text[i]);
  std::size_t n = 0;
  char32_t c = 0;
  char32_t min = 0;
  if (b0 < 0x80) {
    if (out) *out = b0;
    return 1;
  }
  if ((b0 & 0xE0) == 0xC0) {
    n = 2, c = b0 & 0x1F, min = 0x80;
  } else if ((b0 & 0xF0) == 0xE0) {
    n = 3, c = b0 & 0x0F, min = 0x800;
  } else if ((b0 & 0xF8) == 0xF0) {
    n = 4, c = b0 & 0x07, min = 0x10000;
  } else {
    return 0;
  }
  if (i + n > text.size()) return 0;
  for (std::size_t k = 1; k < n; ++k) {
    const auto b = static_cast<unsigned char>(text[i + k]);
    if ((b & 0xC0) != 0x80) return 0;
    c = (c << 6) | (b & 0x3F);
  }
  if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return 0;
  if (out) *out = c;
  return n;
}

// ---------------------------------------------------------------------------------------------
// The prob_*.py files: `P={...}` (prob_emit.py first has `from __future__ import unicode_literals`),
// a dict whose keys are '...' strings (\uXXXX escapes) and whose values are floats or such dicts.

struct PyValue {
  std::size_t pos = 0;  // byte offset of the value in the file, for error messages
  bool is_dict = false;
  double number = 0;
  std::vector<std::u32string> keys;  // dict items, in file order
  std::vector<std::size_t> key_pos;
  std::vector<PyValue> values;
};

class ProbFileParser {
 public:
  ProbFileParser(fs::path path, std::string text) : path_(std::move(path)), text_(std::move(text)) {}

  PyValue parse() {
    skip_blank_lines();
    constexpr std::string_view kFuture = "from __future__ import unicode_literals";
    if (std::string_view(text_).substr(pos_).starts_with(kFuture)) {
      pos_ += kFuture.size();
      skip_inline_space();
      if (pos_ < text_.size() && text_[pos_] == '\r') ++pos_;
      if (pos_ >= text_.size() || text_[pos_] != '\n') error_at(pos_, "expected a line end after the import");
      skip_blank_lines();
    }
    expect('P', "expected `P={...}`");
    skip_inline_space();
    expect('=', "expected `=` after P");
    skip_inline_space();
    if (peek() != '{') error_at(pos_, "expected `{` after `P=`");
    PyValue value = parse_dict(0);
    skip_blank_lines();
    if (pos_ != text_.size()) error_at(pos_, "unexpected text after the dict");
    return value;
  }

  [[noreturn]] void error_at(std::size_t pos, std::string_view what) const {
    pos = std::min(pos, text_.size());
    std::size_t line = 1, line_start = 0;
    for (std::size_t i = 0; i < pos; ++i) {
      if (text_[i] == '\n') ++line, line_start = i + 1;
    }
    fail("{}:{}:{}: {} (jieba's HMM file, read as a Python dict literal)", path_.string(), line, pos - line_start + 1,
         what);
  }

 private:
  char peek() const { return pos_ < text_.size() ? text_[pos_] : '\0'; }
  void expect(char c, std::string_view what) {
    if (peek() != c) error_at(pos_, what);
    ++pos_;
  }
  void skip_inline_space() {
    while (peek() == ' ' || peek() == '\t') ++pos_;
  }
  void skip_space() {  // inside brackets, where Python ignores line breaks
    while (peek() == ' ' || peek() == '\t' || peek() == '\n' || peek() == '\r') ++pos_;
  }
  void skip_blank_lines() { skip_space(); }

  PyValue parse_dict(int depth) {
    if (depth > 1) error_at(pos_, "dicts nested deeper than jieba's files have");
    PyValue dict;
    dict.pos = pos_;
    dict.is_dict = true;
    expect('{', "expected `{`");
    std::unordered_set<std::u32string> seen;
    skip_space();
    while (peek() != '}') {
      const std::size_t key_pos = pos_;
      std::u32string key = parse_string();
      // Python would keep the last value; a repeated key means the file is not jieba's.
      if (!seen.insert(key).second) error_at(key_pos, "repeated key");
      skip_space();
      expect(':', "expected `:` after the key");
      skip_space();
      dict.keys.push_back(std::move(key));
      dict.key_pos.push_back(key_pos);
      dict.values.push_back(peek() == '{' ? parse_dict(depth + 1) : parse_number());
      skip_space();
      if (peek() == ',') {
        ++pos_;
        skip_space();
      } else if (peek() != '}') {
        error_at(pos_, "expected `,` or `}`");
      }
    }
    ++pos_;
    return dict;
  }

  std::u32string parse_string() {
    if (peek() != '\'') error_at(pos_, "expected a '...' string key");
    ++pos_;
    std::u32string out;
    while (true) {
      if (pos_ >= text_.size() || text_[pos_] == '\n') error_at(pos_, "unterminated string");
      const char c = text_[pos_];
      if (c == '\'') {
        ++pos_;
        return out;
      }
      if (c == '\\') {
        const char e = pos_ + 1 < text_.size() ? text_[pos_ + 1] : '\0';
        if (e == '\\' || e == '\'') {
          out += static_cast<char32_t>(e);
          pos_ += 2;
        } else if (e == 'u' || e == 'U') {
          const std::size_t digits = e == 'u' ? 4 : 8;
          std::uint32_t value = 0;
          const char* first = text_.data() + pos_ + 2;
          const char* last = text_.data() + std::min(text_.size(), pos_ + 2 + digits);
          const auto [end, ec] = std::from_chars(first, last, value, 16);
          if (ec != std::errc() || end != first + digits || static_cast<std::size_t>(last - first) != digits ||
              value > 0x10FFFF) {
            error_at(pos_, fmt::format("bad \\{} escape", e));
          }
          out += static_cast<char32_t>(value);
          pos_ += 2 + digits;
        } else {
          error_at(pos_, "unsupported escape in a string (only \\uXXXX, \\UXXXXXXXX, \\\\ and \\')");
        }
        continue;
      }
      char32_t cp = 0;
      const std::size_t n = utf8_unit(text_, pos_, &cp);
      if (n == 0) error_at(pos_, "invalid UTF-8");
      out += cp;
      pos_ += n;
    }
  }

  PyValue parse_number() {
    PyValue v;
    v.pos = pos_;
    const char* first = text_.data() + pos_;
    const char* last = text_.data() + text_.size();
    // A float or int literal, optionally negated; from_chars alone would also take "inf" and "nan".
    const char* digits = first < last && *first == '-' ? first + 1 : first;
    if (digits == last || !(is_ascii_digit(static_cast<unsigned char>(*digits)) || *digits == '.')) {
      error_at(pos_, "expected a number or a `{`");
    }
    const auto [end, ec] = std::from_chars(first, last, v.number);
    if (ec != std::errc()) error_at(pos_, "number out of range or malformed");
    pos_ += static_cast<std::size_t>(end - first);
    const char next = peek();
    if (!(next == ',' || next == '}' || next == ' ' || next == '\t' || next == '\n' || next == '\r')) {
      error_at(pos_, "malformed number");
    }
    return v;
  }

  fs::path path_;
  std::string text_;
  std::size_t pos_ = 0;
};

// A dict key that must name a state.
int state_of(const ProbFileParser& parser, const PyValue& dict, std::size_t i) {
  const std::u32string& key = dict.keys[i];
  if (key.size() == 1 && key[0] < 0x80) {
    const auto at = kStateLetters.find(static_cast<char>(key[0]));
    if (at != std::string_view::npos) return static_cast<int>(at);
  }
  parser.error_at(dict.key_pos[i], "a key that is not a state (B, M, E or S)");
}

const PyValue& expect_kind(const ProbFileParser& parser, const PyValue& v, bool dict) {
  if (v.is_dict != dict) parser.error_at(v.pos, dict ? "expected a dict" : "expected a number");
  return v;
}

// The four states' values of `dict` (all required, as jieba indexes each).
template <typename F>
void for_each_state(const ProbFileParser& parser, const PyValue& dict, F&& f) {
  std::array<bool, 4> present{};
  for (std::size_t i = 0; i < dict.keys.size(); ++i) {
    const int s = state_of(parser, dict, i);
    present[s] = true;
    f(s, dict.values[i]);
  }
  for (int s = 0; s < 4; ++s) {
    if (!present[s]) parser.error_at(dict.pos, fmt::format("state {} is missing", kStateLetters[s]));
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------

struct JiebaSegmenter::Model {
  struct Word {
    std::int64_t freq = 0;  // 0: only a prefix of dictionary words
    double log_freq = 0;    // log(freq or 1), as jieba's calc takes it
  };
  std::string dict_text;                             // dict.txt; the keys below view into it
  std::unordered_map<std::string_view, Word> words;  // jieba's FREQ, keyed by UTF-8
  std::int64_t total = 0;
  double log_total = 0;

  std::array<double, 4> start{};
  std::array<std::array<double, 4>, 4> trans{};  // [from][to]; kMinFloat where the file has none
  // [state][c − U+4E00]; kMinFloat where the file has none. Only Han code points are ever
  // emissions (finalseg runs the HMM on re_han runs), so keys outside the range are never used.
  std::array<std::vector<double>, 4> emit;

  using Spans = std::vector<std::pair<std::size_t, std::size_t>>;  // code point ranges [begin, end)

  void load_dict(const fs::path& dir);
  void load_hmm(const fs::path& dir);

  const Word* find(std::string_view text, const std::vector<py::CodePoint>& cps, std::size_t b, std::size_t e) const {
    const std::size_t begin = cps[b].begin;
    const auto it = words.find(text.substr(begin, cps[e - 1].begin + cps[e - 1].size - begin));
    return it == words.end() ? nullptr : &it->second;
  }
  double emission(int state, char32_t c) const { return emit[state][c - kHanFirst]; }

  void cut_dag(std::string_view text, const std::vector<py::CodePoint>& cps, std::size_t b, std::size_t e,
               Spans& out) const;
  void cut_hmm(const std::vector<py::CodePoint>& cps, std::size_t b, std::size_t e, Spans& out) const;
  void viterbi(const std::vector<py::CodePoint>& cps, std::size_t b, std::size_t e, Spans& out) const;
};

// Tokenizer.gen_pfdict: each line (stripped of ASCII whitespace) is "word freq [tag]"; FREQ[word] =
// freq (a repeated word keeps its last freq but both count in total), and every proper prefix of a
// word not yet in FREQ gets freq 0.
void JiebaSegmenter::Model::load_dict(const fs::path& dir) {
  dict_text = core::read_file(dir / kDictFile, "jieba data file");
  const std::string path = (dir / kDictFile).string();
  const std::string_view text = dict_text;
  words.reserve(text.size() / 6);
  std::size_t line_no = 0;
  for (std::size_t pos = 0; pos < text.size();) {
    const std::size_t nl = text.find('\n', pos);
    const std::size_t next = nl == std::string_view::npos ? text.size() : nl + 1;
    std::string_view line = text.substr(pos, next - pos);
    pos = next;
    ++line_no;
    constexpr std::string_view kAsciiSpace = " \t\n\r\v\f";  // bytes.strip()
    const std::size_t first = line.find_first_not_of(kAsciiSpace);
    line = first == std::string_view::npos ? std::string_view() : line.substr(first);
    line = line.substr(0, line.find_last_not_of(kAsciiSpace) + 1);
    for (std::size_t i = 0; i < line.size();) {
      const std::size_t n = utf8_unit(line, i);
      if (n == 0) fail("{}: line {}: invalid UTF-8", path, line_no);
      i += n;
    }
    const std::size_t space = line.find(' ');
    if (space == std::string_view::npos) {
      fail("{}: line {}: expected `word freq [tag]`, got '{}'", path, line_no, line);
    }
    const std::string_view word = line.substr(0, space);
    const std::string_view freq_text = line.substr(space + 1, line.find(' ', space + 1) - (space + 1));
    std::int64_t freq = 0;
    const auto [end, ec] = std::from_chars(freq_text.data(), freq_text.data() + freq_text.size(), freq);
    if (freq_text.empty() || !is_ascii_digit(static_cast<unsigned char>(freq_text[0])) || ec != std::errc() ||
        end != freq_text.data() + freq_text.size()) {
      fail("{}: line {}: frequency '{}' is not a non-negative integer", path, line_no, freq_text);
    }
    if (freq > std::numeric_limits<std::int64_t>::max() - total) {
      fail("{}: line {}: total frequency overflows", path, line_no);
    }
    total += freq;
    words.insert_or_assign(word, Word{freq, freq == 0 ? 0.0 : std::log(static_cast<double>(freq))});
    for (std::size_t i = utf8_unit(word, 0); i < word.size(); i += utf8_unit(word, i)) {
      words.try_emplace(word.substr(0, i), Word{});
    }
  }
  if (total <= 0) fail("{}: no word has a positive frequency", path);
  log_total = std::log(static_cast<double>(total));
}

void JiebaSegmenter::Model::load_hmm(const fs::path& dir) {
  {
    ProbFileParser parser(dir / kStartFile, core::read_file(dir / kStartFile, "jieba data file"));
    const PyValue p = parser.parse();
    for_each_state(parser, p, [&](int s, const PyValue& v) { start[s] = expect_kind(parser, v, false).number; });
  }
  {
    ProbFileParser parser(dir / kTransFile, core::read_file(dir / kTransFile, "jieba data file"));
    const PyValue p = parser.parse();
    for (auto& row : trans) row.fill(kMinFloat);  // trans_p[y0].get(y, MIN_FLOAT)
    for_each_state(parser, p, [&](int from, const PyValue& row) {
      expect_kind(parser, row, true);
      for (std::size_t i = 0; i < row.keys.size(); ++i) {
        trans[from][state_of(parser, row, i)] = expect_kind(parser, row.values[i], false).number;
      }
    });
  }
  {
    ProbFileParser parser(dir / kEmitFile, core::read_file(dir / kEmitFile, "jieba data file"));
    const PyValue p = parser.parse();
    for_each_state(parser, p, [&](int s, const PyValue& table) {
      expect_kind(parser, table, true);
      emit[s].assign(kHanLast - kHanFirst + 1, kMinFloat);  // emit_p[y].get(c, MIN_FLOAT)
      for (std::size_t i = 0; i < table.keys.size(); ++i) {
        const std::u32string& key = table.keys[i];
        if (key.size() != 1) parser.error_at(table.key_pos[i], "an emission key that is not one character");
        const double value = expect_kind(parser, table.values[i], false).number;
        if (is_han(key[0])) emit[s][key[0] - kHanFirst] = value;
      }
    });
  }
}

// Tokenizer.get_DAG + calc + __cut_DAG on one Han block cps[b, e). The route is built from the
// right: route[k] = max over dictionary words cps[k..x] (freq > 0, or the single character when
// there is none) of (log(freq or 1) − log(total) + route[x+1], x), ties to the larger x.
void JiebaSegmenter::Model::cut_dag(std::string_view text, const std::vector<py::CodePoint>& cps, std::size_t b,
                                    std::size_t e, Spans& out) const {
  const std::size_t n = e - b;
  std::vector<double> route_prob(n + 1, 0.0);
  std::vector<std::size_t> route_end(n + 1, 0);  // x: the word starting at k ends at x (inclusive)
  for (std::size_t k = n; k-- > 0;) {
    bool any = false;
    double best = 0;
    std::size_t best_x = k;
    for (std::size_t x = k; x < n; ++x) {
      const Word* w = find(text, cps, b + k, b + x + 1);
      if (w == nullptr) break;  // no dictionary word continues this prefix
      if (w->freq == 0) continue;
      const double p = (w->log_freq - log_total) + route_prob[x + 1];
      if (!any || p >= best) best = p, best_x = x, any = true;  // x grows: >= takes the larger on ties
    }
    if (!any) best = (0.0 - log_total) + route_prob[k + 1];  // log(FREQ.get(c) or 1) = 0
    route_prob[k] = best;
    route_end[k] = best_x;
  }

  // Single-character words are buffered; a buffer of several is a dictionary word (then its
  // characters are tokens) or unknown (then the HMM may join them into new words).
  std::size_t buf_begin = 0, buf_size = 0;
  auto flush = [&] {
    if (buf_size == 1) {
      out.emplace_back(b + buf_begin, b + buf_begin + 1);
    } else if (buf_size > 1) {
      const Word* w = find(text, cps, b + buf_begin, b + buf_begin + buf_size);
      if (w == nullptr || w->freq == 0) {
        cut_hmm(cps, b + buf_begin, b + buf_begin + buf_size, out);
      } else {
        for (std::size_t i = 0; i < buf_size; ++i) out.emplace_back(b + buf_begin + i, b + buf_begin + i + 1);
      }
    }
    buf_size = 0;
  };
  for (std::size_t x = 0; x < n;) {
    const std::size_t y = route_end[x] + 1;
    if (y - x == 1) {
      if (buf_size == 0) buf_begin = x;
      ++buf_size;
    } else {
      flush();
      out.emplace_back(b + x, b + y);
    }
    x = y;
  }
  flush();
}

// finalseg.cut: Han runs through the Viterbi HMM; the rest split by re_skip
// ([a-zA-Z0-9]+(?:\.\d+)?%?), matches and the text between them each a token.
void JiebaSegmenter::Model::cut_hmm(const std::vector<py::CodePoint>& cps, std::size_t b, std::size_t e,
                                    Spans& out) const {
  for (std::size_t i = b; i < e;) {
    std::size_t j = i;
    if (is_han(cps[i].value)) {
      while (j < e && is_han(cps[j].value)) ++j;
      viterbi(cps, i, j, out);
      i = j;
      continue;
    }
    while (j < e && !is_han(cps[j].value)) ++j;
    std::size_t gap = i;
    for (std::size_t k = i; k < j;) {
      if (!is_ascii_alnum(cps[k].value)) {
        ++k;
        continue;
      }
      std::size_t m = k;
      while (m < j && is_ascii_alnum(cps[m].value)) ++m;
      if (m + 1 < j && cps[m].value == '.' && is_ascii_digit(cps[m + 1].value)) {
        m += 2;
        while (m < j && is_ascii_digit(cps[m].value)) ++m;
      }
      if (m < j && cps[m].value == '%') ++m;
      if (gap < k) out.emplace_back(gap, k);
      out.emplace_back(k, m);
      gap = k = m;
    }
    if (gap < j) out.emplace_back(gap, j);
    i = j;
  }
}

// finalseg.viterbi + __cut on the Han run cps[b, e): the most likely B/M/E/S tagging (sums of log
// probabilities in Python's order), then B..E spans and S characters are words, and whatever
// follows the last E or S is one more.
void JiebaSegmenter::Model::viterbi(const std::vector<py::CodePoint>& cps, std::size_t b, std::size_t e,
                                    Spans& out) const {
  const std::size_t n = e - b;
  std::vector<std::array<double, 4>> v(n);
  std::vector<std::array<std::uint8_t, 4>> back(n);
  for (int y = 0; y < 4; ++y) v[0][y] = start[y] + emission(y, cps[b].value);
  for (std::size_t t = 1; t < n; ++t) {
    for (int y = 0; y < 4; ++y) {
      const double em = emission(y, cps[b + t].value);
      int best_state = -1;
      double best = 0;
      for (const int y0 : kPrevStates[y]) {
        const double p = v[t - 1][y0] + trans[y0][y] + em;
        if (best_state < 0 || p > best || (p == best && y0 > best_state)) best = p, best_state = y0;
      }
      v[t][y] = best;
      back[t][y] = static_cast<std::uint8_t>(best_state);
    }
  }
  std::vector<int> tags(n);
  tags[n - 1] = v[n - 1][kS] >= v[n - 1][kE] ? kS : kE;  // max over 'ES', a tie to S
  for (std::size_t t = n - 1; t > 0; --t) tags[t - 1] = back[t][tags[t]];

  std::size_t begin = 0, next = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (tags[i] == kB) {
      begin = i;
    } else if (tags[i] == kE) {
      out.emplace_back(b + begin, b + i + 1);
      next = i + 1;
    } else if (tags[i] == kS) {
      out.emplace_back(b + i, b + i + 1);
      next = i + 1;
    }
  }
  if (next < n) out.emplace_back(b + next, e);
}

JiebaSegmenter::JiebaSegmenter(const fs::path& dir) : model_(std::make_unique<Model>()) {
  // Every file first, so a missing one is reported before the dictionary is parsed.
  for (const auto name : {kDictFile, kStartFile, kTransFile, kEmitFile}) {
    std::error_code ec;
    if (!fs::is_regular_file(dir / name, ec)) {
      fail(
          "Chinese LongBench metrics need jieba's dictionary: install Debian's python3-jieba or set "
          "KVLAB_JIEBA_DIR (looked in {}: no {})",
          dir.string(), name);
    }
  }
  model_->load_dict(dir);
  model_->load_hmm(dir);
}

JiebaSegmenter::~JiebaSegmenter() = default;
JiebaSegmenter::JiebaSegmenter(JiebaSegmenter&&) noexcept = default;
JiebaSegmenter& JiebaSegmenter::operator=(JiebaSegmenter&&) noexcept = default;

std::size_t JiebaSegmenter::dictionary_keys() const { return model_->words.size(); }
std::int64_t JiebaSegmenter::total() const { return model_->total; }

// Tokenizer.cut: Han blocks (re_han_default) go to __cut_DAG; elsewhere re_skip_default splits
// off "\r\n" and single whitespace characters, and everything else is yielded one code point at a
// time, so every other code point is its own token.
std::vector<std::string> JiebaSegmenter::cut(std::string_view text) const {
  const std::vector<py::CodePoint> cps = py::decode(text);
  Model::Spans spans;
  spans.reserve(cps.size());
  for (std::size_t i = 0; i < cps.size();) {
    if (in_han_block(cps[i].value)) {
      std::size_t j = i;
      while (j < cps.size() && in_han_block(cps[j].value)) ++j;
      model_->cut_dag(text, cps, i, j, spans);
      i = j;
    } else if (cps[i].value == '\r' && i + 1 < cps.size() && cps[i + 1].value == '\n') {
      spans.emplace_back(i, i + 2);
      i += 2;
    } else {
      spans.emplace_back(i, i + 1);
      ++i;
    }
  }
  std::vector<std::string> tokens;
  tokens.reserve(spans.size());
  for (const auto& [b, e] : spans) {
    const std::size_t begin = cps[b].begin;
    tokens.emplace_back(text.substr(begin, cps[e - 1].begin + cps[e - 1].size - begin));
  }
  return tokens;
}

fs::path default_jieba_dir() {
  const char* env = std::getenv("KVLAB_JIEBA_DIR");
  if (env != nullptr && *env != '\0') return env;
  return "/usr/lib/python3/dist-packages/jieba";
}

const JiebaSegmenter& default_jieba() {
  // A function-local static: loaded once, thread-safe; a throwing load leaves it unset, so the
  // next call tries again (and reports again).
  static const JiebaSegmenter segmenter(default_jieba_dir());
  return segmenter;
}

Segmenter jieba_segmenter() {
  return [](std::string_view text) { return default_jieba().cut(text); };
}

}  // namespace kvlab::datasets
