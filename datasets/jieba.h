// jieba 0.42.1's Chinese word segmentation, `jieba.cut(text, cut_all=False, HMM=True)`, for
// LongBench's qa_f1_zh_score and rouge_zh_score (longbench_metrics.h), which segment with it.
//
// Reproduced exactly (the test compares token lists with the real Python package), reading jieba's
// own data files, as Debian's python3-jieba installs them:
//   <dir>/dict.txt                      "word freq [tag]" lines: the prefix dictionary (every prefix of
//                                       a word is also a key, with freq 0) and total = Σ freq
//   <dir>/finalseg/prob_start.py        P = {state: log p}              (states B, M, E, S)
//   <dir>/finalseg/prob_trans.py        P = {state: {state: log p}}
//   <dir>/finalseg/prob_emit.py         P = {state: {'\uXXXX': log p}}  (the HMM for unknown words)
// The prob_*.py files are read by a strict parser of exactly their Python dict-literal form.
//
// The algorithm, on code points: the text is split into runs of [\u4E00-\u9FD5a-zA-Z0-9+#&._%-]
// ("Han blocks") and the rest; outside Han blocks every code point is a token, except "\r\n", which
// is one. A Han block is cut along the maximum-probability route through the DAG of dictionary
// words (log(freq) − log(total) summed, ties to the longer last word); runs of single-character
// words that are not themselves a dictionary word go through the B/M/E/S Viterbi HMM (Han
// characters) and finalseg's [a-zA-Z0-9]+(\.\d+)?%? split (the rest). Tokens are byte ranges of the
// input, so they concatenate back to it. Input is UTF-8; an invalid byte is a one-byte token (Python
// would never see such text).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "datasets/longbench_metrics.h"

namespace kvlab::datasets {

class JiebaSegmenter {
 public:
  // Loads the four files above from `dir`; about 0.1–0.2 s in Release (dict.txt: 349k lines).
  // kvlab::Error naming the file (and line, column) when one is missing or malformed; a missing
  // file's message says how to install python3-jieba or point KVLAB_JIEBA_DIR at a copy.
  explicit JiebaSegmenter(const std::filesystem::path& dir);
  ~JiebaSegmenter();
  JiebaSegmenter(JiebaSegmenter&&) noexcept;
  JiebaSegmenter& operator=(JiebaSegmenter&&) noexcept;

  // jieba.cut(text): UTF-8 tokens in order, concatenating to `utf8`. Thread-safe (const, no state).
  std::vector<std::string> cut(std::string_view utf8) const;

  std::size_t dictionary_keys() const;  // words and their prefixes (jieba's len(FREQ))
  std::int64_t total() const;           // Σ freq over dict.txt lines (a repeated word counts twice)

 private:
  struct Model;
  std::unique_ptr<Model> model_;
};

// Where the default segmenter reads jieba's files: $KVLAB_JIEBA_DIR when set and not empty, else
// /usr/lib/python3/dist-packages/jieba (Debian's python3-jieba).
std::filesystem::path default_jieba_dir();

// The segmenter of default_jieba_dir(), loaded on the first call and shared (thread-safe). A failed
// load throws kvlab::Error and is retried on the next call. Use it to check early that jieba is there.
const JiebaSegmenter& default_jieba();

// A Segmenter for ScoreOptions::zh_segmenter / longbench_score: default_jieba().cut. Cheap to make:
// jieba's files are read on the first segmentation, so English-only evaluations never need them;
// that first call throws kvlab::Error if they are missing.
Segmenter jieba_segmenter();

}  // namespace kvlab::datasets
