// Frequent words extraction (RULER's freq_words_extraction.py): random 6-letter "coded words" with
// Zipf counts int(n · k^−α / ζ(α)) for rank k; rank 1 is the noise token "...", ranks 2–4 are the
// answer. Vocabulary size (max_seq_length − tokens_to_generate − template tokens) // 50.
//
// Sizing differs from RULER, which starts at n = budget // 6 words, grows by budget // 32 until the
// text reaches the budget and steps back once (so it may land a step short): kvlab searches n per
// sample like every other task (ruler_sizing.h).
#include <algorithm>
#include <cmath>
#include <set>

#include "core/error.h"
#include "datasets/py_str.h"
#include "datasets/rng.h"
#include "datasets/ruler_families.h"

namespace kvlab::datasets::detail {

namespace {

constexpr int kCodedWordLength = 6;

// ζ(α) for α > 1: the first 1000 terms plus the Euler–Maclaurin tail (error far below 1e-12).
double zeta(double alpha) {
  constexpr int kTerms = 1000;
  double sum = 0;
  for (int k = kTerms; k >= 1; --k) sum += std::pow(static_cast<double>(k), -alpha);
  const double n = kTerms;
  sum += std::pow(n, 1 - alpha) / (alpha - 1) - 0.5 * std::pow(n, -alpha) + alpha / 12.0 * std::pow(n, -alpha - 1);
  return sum;
}

class FreqWords final : public Family {
 public:
  explicit FreqWords(const FamilyInput& in) : in_(in), spec_(*in.spec) {
    if (!(spec_.alpha > 1)) fail("ruler:fwe: alpha must be > 1 (got {})", spec_.alpha);
    vocab_size_ = (in_.options.max_seq_length - in_.tokens_to_generate - in_.options.reserved_tokens) / 50;
    if (vocab_size_ < 5) {
      fail("ruler:fwe: max_seq_length {} leaves a vocabulary of {} coded words; need at least 5 (max_seq_length ≥ {})",
           in_.options.max_seq_length, vocab_size_, 250 + in_.tokens_to_generate + in_.options.reserved_tokens);
    }
    zeta_ = spec_.alpha == 2.0 ? M_PI * M_PI / 6.0 : zeta(spec_.alpha);
    // Smallest n whose counts make ranks 2–4 the unique top three real words: count(2) > count(3) >
    // count(4) > count(5) ≥ 0 and count(4) ≥ 1.
    min_units_ = 8;
    while (!(count(min_units_, 2) > count(min_units_, 3) && count(min_units_, 3) > count(min_units_, 4) &&
             count(min_units_, 4) > count(min_units_, 5) && count(min_units_, 4) >= 1)) {
      min_units_ *= 2;
    }
  }

  std::int64_t min_units(std::int64_t) const override { return min_units_; }
  std::int64_t probe_units() const override { return std::max<std::int64_t>(min_units_ * 2, 512); }

  Built build(std::int64_t index, std::int64_t units) const override {
    Rng rng({in_.stream, name_hash("fwe"), static_cast<std::uint64_t>(index)});
    std::set<std::string> seen;
    std::vector<std::string> vocab;
    while (static_cast<std::int64_t>(vocab.size()) < vocab_size_) {
      std::string w;
      for (int i = 0; i < kCodedWordLength; ++i) w += static_cast<char>('a' + rng.below(26));
      if (seen.insert(w).second) vocab.push_back(std::move(w));
    }
    rng.shuffle(vocab);
    vocab[0] = "...";  // the top rank is noise
    std::vector<std::string> text;
    for (std::int64_t k = 1; k <= vocab_size_; ++k) {
      const std::int64_t c = count(units, k);
      for (std::int64_t i = 0; i < c; ++i) text.push_back(vocab[static_cast<std::size_t>(k - 1)]);
    }
    rng.shuffle(text);
    const RulerTemplate t = ruler_template(RulerFamily::freq_words);
    Built b = assemble("", t.task_template, t.answer_prefix, py::join(text, " "), {{"query", ""}}, {});
    b.answers = {vocab[1], vocab[2], vocab[3]};
    return b;
  }

 private:
  // int(num_words · k^−α / ζ(α)), as NumPy's astype(int) truncates.
  std::int64_t count(std::int64_t units, std::int64_t k) const {
    return static_cast<std::int64_t>(static_cast<double>(units) * std::pow(static_cast<double>(k), -spec_.alpha) / zeta_);
  }

  FamilyInput in_;
  const RulerTaskSpec& spec_;
  std::int64_t vocab_size_ = 0;
  double zeta_ = 0;
  std::int64_t min_units_ = 8;
};

}  // namespace

std::unique_ptr<Family> make_freq_words(const FamilyInput& in) { return std::make_unique<FreqWords>(in); }

}  // namespace kvlab::datasets::detail
