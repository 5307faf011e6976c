// LongBench's per-dataset metrics (THUDM/LongBench metrics.py), one (prediction, ground truth) pair
// at a time; values in [0, 1]. longbench_score() applies eval.py's rules around them: the first
// line only for trec, triviaqa, samsum and lsht, and the max over the ground truths.
//
// Library behaviour reproduced (LongBench calls Python packages):
//   rouge_score   the `rouge` package 1.0.1 (pltrdy/rouge): Rouge().get_scores([pred], [gt], avg=True)
//                 ["rouge-l"]["f"], i.e. summary-level ROUGE-L with exclusive=True: texts split into
//                 sentences on '.', words on ' ', the union LCS counted as a *set* of words, and
//                 f = 2·p·r / (p + r + 1e-8); any exception → 0 (empty text). Not reproduced:
//                 Python's recursion limit, which makes the package fail (→ 0) when one sentence pair
//                 has about 1000 words together.
//   code_sim      fuzzywuzzy fuzz.ratio / 100 with the python-Levenshtein backend: equal strings →
//                 1, an empty one → 0, else round(100 · 2·LCS / (len1 + len2)) / 100 in code points,
//                 rounded half to even (the pure-Python difflib fallback can give slightly lower values).
//   *_zh          need jieba's segmentation: pass a Segmenter (datasets/jieba.h: jieba_segmenter(),
//                 jieba 0.42.1's algorithm on Debian python3-jieba's dictionary) or get a
//                 kvlab::Error naming the dataset.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace kvlab::datasets {

// SQuAD normalization (metrics.py normalize_answer): lower, drop string.punctuation, replace the
// words a / an / the by a space, collapse whitespace to single spaces.
std::string normalize_answer(std::string_view text);
// metrics.py normalize_zh_answer: lower, drop ASCII and Chinese punctuation, drop all whitespace.
std::string normalize_zh_answer(std::string_view text);

// Token-bag F1 of two token lists (metrics.py f1_score); 0 when nothing is shared.
double token_f1(const std::vector<std::string>& prediction, const std::vector<std::string>& ground_truth);

double qa_f1_score(std::string_view prediction, std::string_view ground_truth);
double rouge_score(std::string_view prediction, std::string_view ground_truth);  // ROUGE-L F (see above)
double classification_score(std::string_view prediction, std::string_view ground_truth,
                            const std::vector<std::string>& all_classes);
double retrieval_score(std::string_view prediction, std::string_view ground_truth);     // gt "Paragraph N"
double retrieval_zh_score(std::string_view prediction, std::string_view ground_truth);  // gt "段落N"
double count_score(std::string_view prediction, std::string_view ground_truth);
double code_sim_score(std::string_view prediction, std::string_view ground_truth);
// fuzz.ratio(a, b) in [0, 100] (python-Levenshtein backend), exposed for tests.
int fuzz_ratio(std::string_view a, std::string_view b);

// jieba.cut(text, cut_all=False): the tokens of a Chinese text.
using Segmenter = std::function<std::vector<std::string>(std::string_view text)>;
double qa_f1_zh_score(std::string_view prediction, std::string_view ground_truth, const Segmenter& segment);
double rouge_zh_score(std::string_view prediction, std::string_view ground_truth, const Segmenter& segment);

// eval.py's score of one prediction (eval.py hands every sample the all_classes of the file's last
// line; LongBench's files repeat one list on every line, so a per-sample list agrees): dataset2metric[dataset], first line only for trec, triviaqa,
// samsum and lsht, max over `answers` (0 when there are none). `dataset` may carry LongBench-E's "_e".
// kvlab::Error for an unknown dataset, or a zh dataset without a segmenter.
double longbench_score(std::string_view dataset, std::string_view prediction, const std::vector<std::string>& answers,
                       const std::vector<std::string>& all_classes, const Segmenter* segment = nullptr);

}  // namespace kvlab::datasets
