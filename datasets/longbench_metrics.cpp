#include "datasets/longbench_metrics.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "core/error.h"
#include "datasets/longbench.h"
#include "datasets/py_str.h"

namespace kvlab::datasets {

namespace {

// metrics.py's cn_punctuation, verbatim.
constexpr std::string_view kChinesePunctuation =
    "！？｡。＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～｟｠｢｣､、〃》「」『』【】〔〕〖〗〘〙〚〛〜〝〞〟〰〾〿–—‘’‛“”„‟…‧﹏.";

const std::set<char32_t>& chinese_punctuation() {
  static const std::set<char32_t> set = [] {
    std::set<char32_t> s;
    for (const auto& cp : py::decode(kChinesePunctuation)) s.insert(cp.value);
    return s;
  }();
  return set;
}

// re.sub(r"\b(a|an|the)\b", " ", text)
std::string remove_articles(std::string_view text) {
  const auto cps = py::decode(text);
  std::string out;
  out.reserve(text.size());
  std::size_t i = 0;
  while (i < cps.size()) {
    if (i == 0 || !py::is_word_char(cps[i - 1].value)) {
      std::size_t matched = 0;
      for (const std::u32string_view w : {U"a", U"an", U"the"}) {
        if (i + w.size() > cps.size()) continue;
        bool same = true;
        for (std::size_t k = 0; k < w.size() && same; ++k) same = cps[i + k].value == w[k];
        if (same && (i + w.size() == cps.size() || !py::is_word_char(cps[i + w.size()].value))) {
          matched = w.size();
          break;
        }
      }
      if (matched > 0) {
        out += ' ';
        i += matched;
        continue;
      }
    }
    out.append(text.substr(cps[i].begin, cps[i].size));
    ++i;
  }
  return out;
}

std::string remove_if_cp(std::string_view text, bool (*drop)(char32_t)) {
  std::string out;
  for (const auto& cp : py::decode(text)) {
    if (!drop(cp.value)) out.append(text.substr(cp.begin, cp.size));
  }
  return out;
}

// Python's `ground_truth_id = re.findall(pattern, gt)[0]` for pattern = marker + (\d+).
std::string paragraph_id(std::string_view ground_truth, std::string_view marker, std::string_view metric) {
  std::size_t from = 0;
  while (true) {
    const std::size_t at = ground_truth.find(marker, from);
    if (at == std::string_view::npos) break;
    const auto digits = py::decode(ground_truth.substr(at + marker.size()));
    std::string id;
    for (const auto& cp : digits) {
      if (!py::is_decimal(cp.value)) break;
      py::append_utf8(id, cp.value);
    }
    if (!id.empty()) return id;
    from = at + 1;
  }
  fail("{}: ground truth '{}' has no '{}N'", metric, ground_truth, marker);
}

double share_equal(const std::vector<std::string>& numbers, std::string_view target) {
  if (numbers.empty()) return 0.0;
  const auto right = std::count(numbers.begin(), numbers.end(), target);
  return static_cast<double>(right) / static_cast<double>(numbers.size());
}

// rouge 1.0.1: [" ".join(s.split()) for s in text.split(".") if len(s) > 0]
std::vector<std::string> rouge_sentences(std::string_view text) {
  std::vector<std::string> out;
  for (const auto& piece : py::split_on(text, ".")) {
    if (!piece.empty()) out.push_back(py::join(py::split(piece), " "));
  }
  return out;
}

// The words of the LCS of x (reference) and y (hypothesis) by rouge_score._recon_lcs's walk.
void lcs_words(const std::vector<std::string>& x, const std::vector<std::string>& y, std::set<std::string>& out) {
  const std::size_t n = x.size();
  const std::size_t m = y.size();
  std::vector<std::vector<std::uint32_t>> t(n + 1, std::vector<std::uint32_t>(m + 1, 0));
  for (std::size_t i = 1; i <= n; ++i) {
    for (std::size_t j = 1; j <= m; ++j) {
      t[i][j] = x[i - 1] == y[j - 1] ? t[i - 1][j - 1] + 1 : std::max(t[i - 1][j], t[i][j - 1]);
    }
  }
  std::size_t i = n;
  std::size_t j = m;
  while (i > 0 && j > 0) {
    if (x[i - 1] == y[j - 1]) {
      out.insert(x[i - 1]);
      --i;
      --j;
    } else if (t[i - 1][j] > t[i][j - 1]) {
      --i;
    } else {
      --j;
    }
  }
}

std::vector<std::string> words_of(const std::string& sentence) { return py::split_on(sentence, " "); }

// Python's round() to an integer: half to even.
int round_half_even(double x) { return static_cast<int>(std::nearbyint(x)); }

}  // namespace

std::string normalize_answer(std::string_view text) {
  const std::string lowered = py::lower(text);
  const std::string no_punct = remove_if_cp(lowered, py::is_ascii_punctuation);
  return py::join(py::split(remove_articles(no_punct)), " ");
}

std::string normalize_zh_answer(std::string_view text) {
  const std::string lowered = py::lower(text);
  std::string out;
  for (const auto& cp : py::decode(lowered)) {
    if (py::is_ascii_punctuation(cp.value) || chinese_punctuation().count(cp.value) || py::is_space(cp.value)) continue;
    out.append(lowered.substr(cp.begin, cp.size));
  }
  return out;
}

double token_f1(const std::vector<std::string>& prediction, const std::vector<std::string>& ground_truth) {
  std::map<std::string, std::int64_t> pred_counts;
  for (const auto& t : prediction) ++pred_counts[t];
  std::map<std::string, std::int64_t> gt_counts;
  for (const auto& t : ground_truth) ++gt_counts[t];
  std::int64_t same = 0;
  for (const auto& [token, c] : pred_counts) {
    const auto it = gt_counts.find(token);
    if (it != gt_counts.end()) same += std::min(c, it->second);
  }
  if (same == 0) return 0.0;
  const double precision = static_cast<double>(same) / static_cast<double>(prediction.size());
  const double recall = static_cast<double>(same) / static_cast<double>(ground_truth.size());
  return 2 * precision * recall / (precision + recall);
}

double qa_f1_score(std::string_view prediction, std::string_view ground_truth) {
  return token_f1(py::split(normalize_answer(prediction)), py::split(normalize_answer(ground_truth)));
}

double rouge_score(std::string_view prediction, std::string_view ground_truth) {
  const auto hyp = rouge_sentences(prediction);
  const auto ref = rouge_sentences(ground_truth);
  if (hyp.empty() || ref.empty()) return 0.0;  // the package raises; LongBench returns 0
  std::set<std::string> ref_words;
  for (const auto& s : ref) {
    for (auto& w : words_of(s)) ref_words.insert(std::move(w));
  }
  std::set<std::string> hyp_words;
  for (const auto& s : hyp) {
    for (auto& w : words_of(s)) hyp_words.insert(std::move(w));
  }
  std::set<std::string> lcs_union;  // union over every (reference sentence, hypothesis sentence) pair
  for (const auto& r : ref) {
    const auto rw = words_of(r);
    for (const auto& h : hyp) lcs_words(rw, words_of(h), lcs_union);
  }
  const double llcs = static_cast<double>(lcs_union.size());
  const double r_lcs = llcs / static_cast<double>(ref_words.size());
  const double p_lcs = llcs / static_cast<double>(hyp_words.size());
  return 2.0 * ((p_lcs * r_lcs) / (p_lcs + r_lcs + 1e-8));
}

double classification_score(std::string_view prediction, std::string_view ground_truth,
                            const std::vector<std::string>& all_classes) {
  std::vector<std::string> matches;
  for (const auto& c : all_classes) {
    if (py::contains(prediction, c)) matches.push_back(c);
  }
  // metrics.py removes from the list it is iterating over, so the element after each removed one
  // is skipped; reproduced here. (Its difflib fallback is unreachable: `em_match_list != 0` is
  // always true for a list.)
  for (std::size_t i = 0; i < matches.size(); ++i) {
    const std::string term = matches[i];
    if (py::contains(ground_truth, term) && term != ground_truth) {
      matches.erase(std::find(matches.begin(), matches.end(), term));  // list.remove: first equal
    }
  }
  if (std::find(matches.begin(), matches.end(), ground_truth) != matches.end()) {
    return 1.0 / static_cast<double>(matches.size());
  }
  return 0.0;
}

double retrieval_score(std::string_view prediction, std::string_view ground_truth) {
  return share_equal(py::find_decimal_runs(prediction), paragraph_id(ground_truth, "Paragraph ", "retrieval_score"));
}

double retrieval_zh_score(std::string_view prediction, std::string_view ground_truth) {
  return share_equal(py::find_decimal_runs(prediction), paragraph_id(ground_truth, "段落", "retrieval_zh_score"));
}

double count_score(std::string_view prediction, std::string_view ground_truth) {
  return share_equal(py::find_decimal_runs(prediction), ground_truth);
}

int fuzz_ratio(std::string_view a, std::string_view b) {
  if (a == b) return 100;  // check_for_equivalence comes before check_empty_string
  if (a.empty() || b.empty()) return 0;
  const auto x = py::decode(a);
  const auto y = py::decode(b);
  // Levenshtein.ratio = (|a| + |b| − indel distance) / (|a| + |b|) = 2·LCS / (|a| + |b|).
  std::vector<std::uint32_t> prev(y.size() + 1, 0);
  std::vector<std::uint32_t> cur(y.size() + 1, 0);
  for (std::size_t i = 1; i <= x.size(); ++i) {
    for (std::size_t j = 1; j <= y.size(); ++j) {
      cur[j] = x[i - 1].value == y[j - 1].value ? prev[j - 1] + 1 : std::max(prev[j], cur[j - 1]);
    }
    std::swap(prev, cur);
  }
  const double lcs = prev[y.size()];
  const double ratio = 2.0 * lcs / static_cast<double>(x.size() + y.size());
  return round_half_even(100.0 * ratio);
}

double code_sim_score(std::string_view prediction, std::string_view ground_truth) {
  const auto lines = py::split_on(py::lstrip_chars(prediction, '\n'), "\n");
  std::string first;
  for (const auto& line : lines) {
    if (!py::contains(line, "`") && !py::contains(line, "#") && !py::contains(line, "//")) {
      first = line;
      break;
    }
  }
  return fuzz_ratio(first, ground_truth) / 100.0;
}

double qa_f1_zh_score(std::string_view prediction, std::string_view ground_truth, const Segmenter& segment) {
  if (!segment) fail("qa_f1_zh_score needs a Chinese segmenter (jieba); none given");
  auto tokens = [&](std::string_view text) {
    std::vector<std::string> out;
    for (const auto& t : segment(text)) {
      std::string n = normalize_zh_answer(t);
      if (!n.empty()) out.push_back(std::move(n));
    }
    return out;
  };
  return token_f1(tokens(prediction), tokens(ground_truth));
}

double rouge_zh_score(std::string_view prediction, std::string_view ground_truth, const Segmenter& segment) {
  if (!segment) fail("rouge_zh_score needs a Chinese segmenter (jieba); none given");
  return rouge_score(py::join(segment(prediction), " "), py::join(segment(ground_truth), " "));
}

double longbench_score(std::string_view dataset, std::string_view prediction, const std::vector<std::string>& answers,
                       const std::vector<std::string>& all_classes, const Segmenter* segment) {
  const LongBenchDataset& d = longbench_dataset(dataset);
  std::string pred(prediction);
  if (d.first_line_only) pred = py::split_on(py::lstrip_chars(pred, '\n'), "\n").front();
  const std::string_view metric = d.metric;
  if ((metric == "qa_f1_zh_score" || metric == "rouge_zh_score") && (segment == nullptr || !*segment)) {
    fail("longbench:{}: its metric {} needs a Chinese segmenter (datasets::jieba_segmenter()); none given", d.name, metric);
  }
  double best = 0.0;
  for (const auto& gt : answers) {
    double s = 0;
    if (metric == "qa_f1_score") s = qa_f1_score(pred, gt);
    else if (metric == "qa_f1_zh_score") s = qa_f1_zh_score(pred, gt, *segment);
    else if (metric == "rouge_score") s = rouge_score(pred, gt);
    else if (metric == "rouge_zh_score") s = rouge_zh_score(pred, gt, *segment);
    else if (metric == "classification_score") s = classification_score(pred, gt, all_classes);
    else if (metric == "retrieval_score") s = retrieval_score(pred, gt);
    else if (metric == "retrieval_zh_score") s = retrieval_zh_score(pred, gt);
    else if (metric == "count_score") s = count_score(pred, gt);
    else if (metric == "code_sim_score") s = code_sim_score(pred, gt);
    else fail("longbench:{}: unknown metric {}", d.name, metric);
    best = std::max(best, s);
  }
  return best;
}

}  // namespace kvlab::datasets
