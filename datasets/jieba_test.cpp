// jieba: the segmenter against the real Python package (python3-jieba) as the oracle, on seeded
// random text and hand-written edge cases; the data-file parsers' errors; and the Chinese LongBench
// metrics with it against LongBench's Python formulas. The oracle tests skip when no python3 can
// import jieba (the interpreter is taken from $KVLAB_PYTHON, then python3, then /usr/bin/python3).
// KVLAB_JIEBA_ORACLE_INPUTS=N raises the number of random inputs for a longer check.
#include "datasets/jieba.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include "core/error.h"
#include "core/error_of.h"
#include "datasets/longbench_metrics.h"
#include "datasets/py_str.h"
#include "datasets/rng.h"

namespace kvlab::datasets {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using V = std::vector<std::string>;

using core::error_of;

// A scratch directory, removed with everything in it.
struct TempDir {
  fs::path path;
  explicit TempDir(std::string_view name)
      : path(fs::temp_directory_path() / fmt::format("kvlab_jieba_{}_{}", ::getpid(), name)) {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  fs::path write(const std::string& name, std::string_view text) const {
    const fs::path p = path / name;
    fs::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary) << text;
    return p;
  }
};

std::string read_all(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (const char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// ---------------------------------------------------------------------------------------------
// The Python oracle.

struct Oracle {
  std::string python;  // an interpreter that imports jieba
  fs::path jieba_dir;  // its jieba package: the C++ side reads the same data files
};

const std::optional<Oracle>& oracle() {
  static const std::optional<Oracle> found = []() -> std::optional<Oracle> {
    std::vector<std::string> candidates;
    if (const char* env = std::getenv("KVLAB_PYTHON"); env != nullptr && *env != '\0') candidates.emplace_back(env);
    candidates.emplace_back("python3");
    candidates.emplace_back("/usr/bin/python3");
    const TempDir tmp("probe");
    const fs::path out = tmp.path / "dir.txt";
    for (const auto& python : candidates) {
      const std::string cmd =
          fmt::format("{} -c 'import os, jieba; print(os.path.dirname(jieba.__file__))' >{} 2>/dev/null",
                      shell_quote(python), shell_quote(out.string()));
      if (std::system(cmd.c_str()) != 0) continue;
      const std::string dir = py::strip(read_all(out));
      if (!dir.empty()) return Oracle{python, dir};
    }
    return std::nullopt;
  }();
  return found;
}

// The C++ segmenter on the oracle's data files, loaded once for the whole test program.
const JiebaSegmenter& oracle_segmenter() {
  static const JiebaSegmenter segmenter(oracle()->jieba_dir);
  return segmenter;
}

// Runs `script` (argv[1]: input JSON file, argv[2]: output JSON file) once over `input`. jieba's
// dictionary cache goes to a kvlab folder under the temp dir, keyed by the dictionary's path and
// checked against its mtime (set_dictionary), so a stale /tmp/jieba.cache cannot fool the oracle.
nlohmann::json run_python(std::string_view name, const std::string& body, const nlohmann::json& input) {
  const TempDir tmp(name);
  const std::string prologue = R"(import json, os, sys, tempfile
import jieba
jieba.setLogLevel(60)
_cache = os.path.join(tempfile.gettempdir(), 'kvlab_jieba_oracle_cache')
os.makedirs(_cache, exist_ok=True)
jieba.dt.tmp_dir = _cache
jieba.set_dictionary(os.path.join(os.path.dirname(jieba.__file__), 'dict.txt'))
with open(sys.argv[1], encoding='utf-8') as f:
    data = json.load(f)
)";
  const fs::path script = tmp.write("oracle.py", prologue + body);
  const fs::path in = tmp.write("in.json", input.dump());
  const fs::path out = tmp.path / "out.json";
  const fs::path err = tmp.path / "err.txt";
  const std::string cmd = fmt::format("{} {} {} {} 2>{}", shell_quote(oracle()->python), shell_quote(script.string()),
                                      shell_quote(in.string()), shell_quote(out.string()), shell_quote(err.string()));
  if (std::system(cmd.c_str()) != 0) {
    ADD_FAILURE() << "python oracle failed: " << read_all(err);
    return nullptr;
  }
  return nlohmann::json::parse(read_all(out));
}

#define SKIP_WITHOUT_ORACLE()                                                                         \
  if (!oracle()) {                                                                                    \
    GTEST_SKIP() << "no python3 with jieba (Debian: apt install python3-jieba; or set KVLAB_PYTHON)"; \
  }

// ---------------------------------------------------------------------------------------------
// Random inputs: sequences of pieces a text may hold, weighted towards Chinese.

std::vector<std::string> dictionary_words(const fs::path& dict) {
  std::vector<std::string> words;
  std::ifstream in(dict);
  std::string line;
  while (std::getline(in, line)) words.push_back(line.substr(0, line.find(' ')));
  return words;
}

std::string utf8(char32_t c) {
  std::string s;
  py::append_utf8(s, c);
  return s;
}

std::string random_piece(detail::Rng& rng, const std::vector<std::string>& words) {
  static const V kAsciiPunct = {"!", "\"", "#", "$", "%", "&", "'", "(",  ")", "*", "+", ",", "-", ".", "/", ":",
                                ";", "<",  "=", ">", "?", "@", "[", "\\", "]", "^", "_", "`", "{", "|", "}", "~"};
  static const V kZhPunct = {"，", "。", "！", "？", "“", "”", "、", "：", "；", "（", "）", "《", "》", "…", "—"};
  static const V kSpace = {" ", " ", "\n", "\t", "\r\n", "\r", "\u3000", "\u00a0", "  ", "\n\n", "\r\r\n"};
  static const V kNumbers = {"3.14", "3.14%", "12%", "2024", "3.", ".5", "1.2.3", "0.5%", "v2.0", "100%%", "7.x"};
  static const V kOther = {"C++", "C#", "AT&T", "_", "-", "&", "a-b", "x_y", "😀", "é", "Ⅻ", "〇", "ｱ", "１２"};
  const auto pick = [&](const V& v) {
    return v[static_cast<std::size_t>(rng.below(static_cast<std::int64_t>(v.size())))];
  };
  const auto han = [&] { return utf8(static_cast<char32_t>(rng.between(0x4E00, 0x9FD5))); };
  const std::int64_t r = rng.below(100);
  if (r < 40) return words[static_cast<std::size_t>(rng.below(static_cast<std::int64_t>(words.size())))];
  if (r < 52) return han();
  if (r < 58) {  // a run of unknown characters: the HMM's input
    std::string s;
    for (std::int64_t n = rng.between(2, 5); n > 0; --n) s += han();
    return s;
  }
  if (r < 60) {  // just outside jieba's Han range, or beyond the BMP
    static const std::array<std::pair<char32_t, char32_t>, 3> kRanges = {
        {{0x9FD6, 0x9FFF}, {0x3400, 0x4DBF}, {0x20000, 0x2A6DF}}};
    const auto& [lo, hi] = kRanges[static_cast<std::size_t>(rng.below(3))];
    return utf8(static_cast<char32_t>(rng.between(lo, hi)));
  }
  if (r < 67) {  // an ASCII word, either case
    std::string s;
    for (std::int64_t n = rng.between(1, 8); n > 0; --n) {
      s += static_cast<char>((rng.below(4) == 0 ? 'A' : 'a') + rng.below(26));
    }
    return s;
  }
  if (r < 73) {
    if (rng.below(2) == 0) return pick(kNumbers);
    std::string s = std::to_string(rng.below(100000));
    if (rng.below(2) == 0) s += "." + std::to_string(rng.below(1000));
    if (rng.below(2) == 0) s += "%";
    return s;
  }
  if (r < 79) return pick(kAsciiPunct);
  if (r < 87) return pick(kZhPunct);
  if (r < 95) return pick(kSpace);
  return pick(kOther);
}

std::vector<std::string> oracle_inputs(const std::vector<std::string>& words) {
  std::vector<std::string> inputs = {
      "",
      " ",
      " \t\n\r\n\r\u3000",
      "\r\n\r\n",
      "我来到北京清华大学",
      "他来到了网易杭研大厦",
      "3.14%的人",
      "小明硕士毕业于中国科学院计算所，后在日本京都大学深造",
      "我在学习Python和C++编程，用的是Ubuntu 22.04。",
      "李小福是创新办主任也是云计算方面的专家; 什么是八一双鹿",
      "例如我输入一个带“韩玉赏鉴”的标题，在自定义词库中也增加了此词为N类型",
      "「台中」正確應該不會被切開。mac上可分出「石墨烯」；此時又可以分出來凱特琳了。",
      "工信处女干事每月经过下属科室都要亲口交代24口交换机等技术性器件的安装工作",
      "永和服装饰品有限公司",
      "结婚的和尚未结婚的",
      "AT&T和C#以及c++，还有a.b.c、3.14.15、v1.2%和50%%",
      "iPhone15的价格是5999元，比去年上涨了10.5%。\r\n第二行\n第三行\t制表符",
      "　全角空格　和不间断\u00a0空格",
      "😀表情符号😀和𠀀扩展字",
      "鿖鿿㐀超出范围的字",
      "。。。！！！？？？",
      "a",
      "中",
      "-_-",
      "2024年10月1日",
  };
  detail::Rng rng({20240517, detail::name_hash("jieba_oracle")});
  std::int64_t count = 600;
  if (const char* env = std::getenv("KVLAB_JIEBA_ORACLE_INPUTS"); env != nullptr && *env != '\0') {
    count = std::atoll(env);
  }
  for (std::int64_t i = 0; i < count; ++i) {
    // Mostly sentence-sized texts; every 50th a paragraph.
    const std::int64_t pieces = i % 50 == 49 ? rng.between(100, 300) : rng.between(1, 25);
    std::string text;
    for (std::int64_t p = 0; p < pieces; ++p) text += random_piece(rng, words);
    inputs.push_back(std::move(text));
  }
  return inputs;
}

TEST(Jieba, MatchesPythonJiebaTokenForToken) {
  SKIP_WITHOUT_ORACLE();
  const JiebaSegmenter& jieba = oracle_segmenter();
  const auto inputs = oracle_inputs(dictionary_words(oracle()->jieba_dir / "dict.txt"));
  const nlohmann::json expected =
      run_python("cut", "json.dump([list(jieba.cut(t)) for t in data], open(sys.argv[2], 'w'))\n", inputs);
  ASSERT_TRUE(expected.is_array());
  ASSERT_EQ(expected.size(), inputs.size());
  std::size_t mismatches = 0;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const V want = expected[i].get<V>();
    const V got = jieba.cut(inputs[i]);
    if (got == want) continue;
    if (mismatches++ == 0) {
      ADD_FAILURE() << "input " << i << ": " << nlohmann::json(inputs[i]).dump()
                    << "\n  python: " << nlohmann::json(want).dump() << "\n  c++:    " << nlohmann::json(got).dump();
    }
  }
  EXPECT_EQ(mismatches, 0u) << "of " << inputs.size() << " inputs";
  std::cout << "[ jieba    ] " << inputs.size() << " inputs compared with python jieba\n";
}

TEST(Jieba, KnownSentences) {
  SKIP_WITHOUT_ORACLE();
  const JiebaSegmenter& jieba = oracle_segmenter();
  EXPECT_EQ(jieba.cut(""), V{});
  EXPECT_EQ(jieba.cut("我来到北京清华大学"), (V{"我", "来到", "北京", "清华大学"}));
  // 杭研 is not in the dictionary: the HMM joins it into a new word.
  EXPECT_EQ(jieba.cut("他来到了网易杭研大厦"), (V{"他", "来到", "了", "网易", "杭研", "大厦"}));
  // "\r\n" is one token, other whitespace one token per character.
  EXPECT_EQ(jieba.cut(" \r\n\t\n"), (V{" ", "\r\n", "\t", "\n"}));
  // Tokens are byte ranges of the input, so they join back to it.
  const std::string text = "3.14%的人说English，\r\n😀好！";
  EXPECT_EQ(py::join(jieba.cut(text), ""), text);
  EXPECT_GT(jieba.dictionary_keys(), 349'000u);
}

// ---------------------------------------------------------------------------------------------
// A hand-made model: the algorithm's pieces on data small enough to work out by hand.

void write_tiny_model(const TempDir& dir, std::string_view emit = "") {
  // 北京 + 大学: log(100/160) + log(50/160) = log 0.195 beats 北京大学: log(10/160) = log 0.0625.
  dir.write("dict.txt", "北京 100 ns\n大学 50 n\r\n北京大学 10 nt");
  dir.write("finalseg/prob_start.py", "P={'B': -1.0, 'E': -3.14e+100,\n 'M': -3.14e+100, 'S': -1.0}\n");
  dir.write("finalseg/prob_trans.py",
            "P={'B': {'E': -0.5, 'M': -1.0},\n 'E': {'B': -1.0, 'S': -1.0},\n 'M': {'E': -1.0, 'M': -1.0},\n"
            " 'S': {'B': -1.0, 'S': -1.0}}\n");
  // 你 likely begins a word and 好 ends one, so 你好 is tagged B E: one word.
  dir.write("finalseg/prob_emit.py", emit.empty() ? "from __future__ import unicode_literals\n\n"
                                                    "P={'B': {'\\u4f60': -1.0},\n 'E': {'\\u597d': -1.0},\n"
                                                    " 'M': {},\n 'S': {'\\u2236': -2.0,}}\n"
                                                  : emit);
}

TEST(Jieba, TinyModel) {
  const TempDir dir("tiny");
  write_tiny_model(dir);
  const JiebaSegmenter jieba(dir.path);
  EXPECT_EQ(jieba.total(), 160);
  EXPECT_EQ(jieba.dictionary_keys(), 6u);  // 北, 北京, 北京大, 北京大学, 大, 大学
  EXPECT_EQ(jieba.cut("北京大学"), (V{"北京", "大学"}));
  EXPECT_EQ(jieba.cut("北京你好"), (V{"北京", "你好"}));
  // Outside Han blocks every code point is a token, "\r\n" excepted.
  EXPECT_EQ(jieba.cut("，\r\n 。\r"), (V{"，", "\r\n", " ", "。", "\r"}));
  // Unknown non-Han runs go through finalseg's [a-zA-Z0-9]+(\.\d+)?%? split.
  EXPECT_EQ(jieba.cut("3.14%"), (V{"3.14%"}));
  EXPECT_EQ(jieba.cut("a.b"), (V{"a", ".", "b"}));
  EXPECT_EQ(jieba.cut("C++"), (V{"C", "++"}));
  EXPECT_EQ(jieba.cut("1.2.3"), (V{"1.2", ".", "3"}));
}

TEST(Jieba, DataFileErrorsNameTheFile) {
  const TempDir dir("errors");
  const auto load = [&] { JiebaSegmenter{dir.path}; };

  // Missing files: the message says what to install.
  const std::string missing = error_of([&] { JiebaSegmenter(dir.path / "nowhere"); });
  EXPECT_THAT(missing, HasSubstr("python3-jieba"));
  EXPECT_THAT(missing, HasSubstr("KVLAB_JIEBA_DIR"));
  EXPECT_THAT(missing, HasSubstr((dir.path / "nowhere").string()));
  write_tiny_model(dir);
  fs::remove(dir.path / "finalseg/prob_trans.py");
  EXPECT_THAT(error_of(load), HasSubstr("no finalseg/prob_trans.py"));

  // Malformed HMM files: file, line and column.
  write_tiny_model(dir, "P={'B': {'\\u4f60': -1.0},\n 'E': }\n");
  EXPECT_THAT(error_of(load), HasSubstr("prob_emit.py:2:7: expected a number or a `{`"));
  write_tiny_model(dir, "P={'B': {'\\x41': -1.0}}\n");
  EXPECT_THAT(error_of(load), HasSubstr("prob_emit.py:1:11: unsupported escape"));
  write_tiny_model(dir, "P={'B': {'\\u4f6': -1.0}}\n");
  EXPECT_THAT(error_of(load), HasSubstr("prob_emit.py:1:11: bad \\u escape"));
  write_tiny_model(dir, "P={'B': {}, 'E': {}, 'M': {}}\n");
  EXPECT_THAT(error_of(load), HasSubstr("prob_emit.py:1:3: state S is missing"));
  write_tiny_model(dir, "P={'B': {}, 'E': {}, 'M': {}, 'S': {}, 'X': {}}\n");
  EXPECT_THAT(error_of(load), HasSubstr("prob_emit.py:1:40: a key that is not a state"));
  write_tiny_model(dir, "P={'B': {'ab': 1.0}, 'E': {}, 'M': {}, 'S': {}}\n");
  EXPECT_THAT(error_of(load), HasSubstr("prob_emit.py:1:10: an emission key that is not one character"));
  write_tiny_model(dir, "P={'B': {'\\u4f60': 1.0, '\\u4f60': 2.0}, 'E': {}, 'M': {}, 'S': {}}\n");
  EXPECT_THAT(error_of(load), HasSubstr("prob_emit.py:1:25: repeated key"));
  write_tiny_model(dir, "P={'B': {'\\u4f60': 1.0e}, 'E': {}, 'M': {}, 'S': {}}\n");
  EXPECT_THAT(error_of(load), HasSubstr("prob_emit.py:1:"));
  write_tiny_model(dir, "P={'B': {'\\u4f60': inf}, 'E': {}, 'M': {}, 'S': {}}\n");
  EXPECT_THAT(error_of(load), HasSubstr("prob_emit.py:1:20: expected a number"));
  write_tiny_model(dir, "P={'B': -1.0, 'E': {}, 'M': {}, 'S': {}}\n");
  EXPECT_THAT(error_of(load), HasSubstr("prob_emit.py:1:9: expected a dict"));
  write_tiny_model(dir, "P={'B': {}, 'E': {}, 'M': {}, 'S': {}}\nx = 1\n");
  EXPECT_THAT(error_of(load), HasSubstr("prob_emit.py:2:1: unexpected text after the dict"));
  write_tiny_model(dir, "P={'B': {}, 'E': {}, 'M': {}, 'S': {}\n");
  EXPECT_THAT(error_of(load), HasSubstr("prob_emit.py:2:1: expected `,` or `}`"));

  // Malformed dictionary lines: file and line.
  write_tiny_model(dir);
  EXPECT_NO_THROW(load());
  dir.write("dict.txt", "北京 100 ns\n大学\n");
  EXPECT_THAT(error_of(load), HasSubstr("dict.txt: line 2: expected `word freq [tag]`"));
  dir.write("dict.txt", "北京 100 ns\n\n大学 5\n");
  EXPECT_THAT(error_of(load), HasSubstr("dict.txt: line 2: expected `word freq [tag]`"));
  dir.write("dict.txt", "北京 1x0 ns\n");
  EXPECT_THAT(error_of(load), HasSubstr("dict.txt: line 1: frequency '1x0' is not a non-negative integer"));
  dir.write("dict.txt", "北京 -5\n");
  EXPECT_THAT(error_of(load), HasSubstr("dict.txt: line 1: frequency '-5'"));
  dir.write("dict.txt", "\xff\xfe 5\n");
  EXPECT_THAT(error_of(load), HasSubstr("dict.txt: line 1: invalid UTF-8"));
}

TEST(Jieba, DefaultDirectoryAndLazySegmenter) {
  const char* old = std::getenv("KVLAB_JIEBA_DIR");
  const std::optional<std::string> saved = old ? std::optional<std::string>(old) : std::nullopt;
  ::setenv("KVLAB_JIEBA_DIR", "/somewhere/jieba", 1);
  EXPECT_EQ(default_jieba_dir(), fs::path("/somewhere/jieba"));
  ::setenv("KVLAB_JIEBA_DIR", "", 1);
  EXPECT_EQ(default_jieba_dir(), fs::path("/usr/lib/python3/dist-packages/jieba"));
  if (saved) {
    ::setenv("KVLAB_JIEBA_DIR", saved->c_str(), 1);
  } else {
    ::unsetenv("KVLAB_JIEBA_DIR");
  }

  const Segmenter segment = jieba_segmenter();  // reads nothing yet
  if (!fs::is_regular_file(default_jieba_dir() / "dict.txt")) {
    EXPECT_THAT(error_of([&] { segment("中文"); }), HasSubstr("KVLAB_JIEBA_DIR"));
    return;
  }
  EXPECT_EQ(segment("我来到北京清华大学"), (V{"我", "来到", "北京", "清华大学"}));
  EXPECT_EQ(&default_jieba(), &default_jieba());
}

// ---------------------------------------------------------------------------------------------
// LongBench's Chinese metrics with jieba, against metrics.py's formulas run by Python.

TEST(Jieba, ChineseLongBenchMetricsMatchPython) {
  SKIP_WITHOUT_ORACLE();
  const JiebaSegmenter& jieba = oracle_segmenter();
  const Segmenter segment = [&](std::string_view t) { return jieba.cut(t); };
  const std::vector<std::pair<std::string, std::string>> pairs = {
      {"北京是中国的首都。", "中国的首都是北京"},
      {"他来到了网易杭研大厦", "网易杭研大厦"},
      {"会议决定，明年的增长目标为3.14%，由张三负责。", "增长目标是3.14%"},
      {"答案是 Apple 公司的 iPhone 15。", "iPhone 15"},
      {"我不知道。", "我来到北京清华大学"},
      {"", "北京"},
      {"。！？", "“”"},
      {"本次会议讨论了预算问题. 大家同意增加投入. 下次会议在周五举行。", "会议讨论预算. 同意增加投入."},
      {"小明硕士毕业于中国科学院计算所，后在日本京都大学深造", "小明毕业于中国科学院计算所"},
  };
  nlohmann::json input = nlohmann::json::array();
  for (const auto& [p, g] : pairs) input.push_back({p, g});
  // metrics.py: normalize_zh_answer (lower; drop string.punctuation and cn_punctuation; join
  // split()), qa_f1_zh_score (jieba.cut, normalize each token, drop empty ones, f1_score), and
  // rouge_zh_score's " ".join(jieba.cut(...)); the rouge package's score too when it is installed.
  const nlohmann::json got = run_python("metrics", R"(import string
from collections import Counter
cn_punctuation = "！？｡。＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～｟｠｢｣､、〃》「」『』【】〔〕〖〗〘〙〚〛〜〝〞〟〰〾〿–—‘’‛“”„‟…‧﹏."
def normalize_zh_answer(s):
    punct = set(string.punctuation + cn_punctuation)
    return "".join("".join(ch for ch in s.lower() if ch not in punct).split())
def f1_score(prediction, ground_truth):
    common = Counter(prediction) & Counter(ground_truth)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction)
    recall = 1.0 * num_same / len(ground_truth)
    return (2 * precision * recall) / (precision + recall)
def qa_f1_zh_score(prediction, ground_truth):
    p = [normalize_zh_answer(t) for t in jieba.cut(prediction, cut_all=False)]
    g = [normalize_zh_answer(t) for t in jieba.cut(ground_truth, cut_all=False)]
    return f1_score([t for t in p if len(t) > 0], [t for t in g if len(t) > 0])
try:
    from rouge import Rouge
except ImportError:
    Rouge = None
def rouge_l(p, g):
    try:
        return Rouge().get_scores([p], [g], avg=True)["rouge-l"]["f"]
    except Exception:
        return 0.0
out = []
for p, g in data:
    jp, jg = " ".join(jieba.cut(p, cut_all=False)), " ".join(jieba.cut(g, cut_all=False))
    out.append({"f1": qa_f1_zh_score(p, g), "joined": [jp, jg], "rouge": rouge_l(jp, jg) if Rouge else None})
json.dump(out, open(sys.argv[2], 'w'))
)",
                                        input);
  ASSERT_EQ(got.size(), pairs.size());
  for (std::size_t i = 0; i < pairs.size(); ++i) {
    const auto& [p, g] = pairs[i];
    SCOPED_TRACE(p + " | " + g);
    EXPECT_EQ(qa_f1_zh_score(p, g, segment), got[i]["f1"].get<double>());
    EXPECT_EQ(py::join(jieba.cut(p), " "), got[i]["joined"][0].get<std::string>());
    EXPECT_EQ(py::join(jieba.cut(g), " "), got[i]["joined"][1].get<std::string>());
    const double rouge = rouge_zh_score(p, g, segment);
    // Without the rouge package, rouge_score (which reproduces it) on Python's segmentation.
    EXPECT_EQ(rouge, rouge_score(got[i]["joined"][0].get<std::string>(), got[i]["joined"][1].get<std::string>()));
    if (!got[i]["rouge"].is_null()) {
      EXPECT_NEAR(rouge, got[i]["rouge"].get<double>(), 1e-12);
    }
  }
  // Hand-checked: [北京, 是, 中国, 的, 首都] vs [中国, 的, 首都, 是, 北京] share all five → 1.
  EXPECT_EQ(qa_f1_zh_score(pairs[0].first, pairs[0].second, segment), 1.0);
}

}  // namespace
}  // namespace kvlab::datasets
