// Common words extraction (RULER's common_words_extraction.py): a numbered list in which num_cw
// words appear freq_cw times and the others freq_ucw times (6× and 1× below 4096 tokens), after a
// one-shot example (40 words ×10/×3; 20 words ×3/×1 below 4096 tokens).
#include <algorithm>

#include "core/error.h"
#include "datasets/py_str.h"
#include "datasets/rng.h"
#include "datasets/ruler_families.h"

namespace kvlab::datasets::detail {

namespace {

struct Repeats {
  std::int64_t words;  // for the example; the real list's size is the haystack size
  int common;
  int uncommon;
};

std::string numbered(const std::vector<std::string>& words) {
  std::string out;
  for (std::size_t i = 0; i < words.size(); ++i) {
    if (i > 0) out += ' ';
    out += std::to_string(i + 1) + ". " + words[i];
  }
  return out;
}

class CommonWords final : public Family {
 public:
  explicit CommonWords(const FamilyInput& in) : in_(in), spec_(*in.spec) {
    if (!in_.resources.words) {
      fail("ruler:cwe needs a word list (default {}, from Debian's wamerican; or give a file)", kDefaultWordFile);
    }
    const bool short_input = in_.options.max_seq_length < 4096;
    example_ = short_input ? Repeats{20, 3, 1} : Repeats{40, 10, 3};
    real_ = short_input ? Repeats{0, 6, 1} : Repeats{0, spec_.freq_cw, spec_.freq_ucw};
    if (static_cast<std::int64_t>(in_.resources.words->size()) < example_.words + spec_.num_cw) {
      fail("ruler:cwe: word list {} has {} words; need at least {}", in_.resources.words->source(),
           in_.resources.words->size(), example_.words + spec_.num_cw);
    }
  }

  std::int64_t min_units(std::int64_t) const override { return spec_.num_cw; }
  // The example's words are drawn together with the list's, all distinct.
  std::int64_t max_units() const override {
    return static_cast<std::int64_t>(in_.resources.words->size()) - example_.words;
  }
  std::int64_t probe_units() const override { return 100; }

  Built build(std::int64_t index, std::int64_t units) const override {
    Rng rng({in_.stream, name_hash("cwe"), static_cast<std::uint64_t>(index)});
    const auto& pool = in_.resources.words->words();
    const auto picked = rng.sample(static_cast<std::int64_t>(pool.size()), example_.words + units);
    std::vector<std::string> example_words;
    std::vector<std::string> words;
    for (std::size_t i = 0; i < picked.size(); ++i) {
      (static_cast<std::int64_t>(i) < example_.words ? example_words : words).push_back(pool[static_cast<std::size_t>(picked[i])]);
    }
    std::vector<std::string> example_common;
    const std::string example_list = listing(rng, example_words, example_, example_common);
    std::vector<std::string> common;
    const std::string list = listing(rng, words, real_, common);

    const RulerTemplate t = ruler_template(RulerFamily::common_words);
    const Fills fills = {{"num_cw", std::to_string(spec_.num_cw)}, {"query", ""}};
    // The one-shot example: the full template + answer prefix + " " + "1. c1 2. c2 ... 10. c10".
    const std::string example = fill(py::replace_all(t.task_template, "{context}", example_list), fills) +
                                fill(t.answer_prefix, fills) + " " + numbered(example_common);
    Built b = assemble(example + "\n", t.task_template, t.answer_prefix, list, fills, {});
    b.answers = std::move(common);
    return b;
  }

 private:
  // First num_cw words are the common ones; each repeated, shuffled, numbered "1. w 2. w ...".
  std::string listing(Rng& rng, const std::vector<std::string>& words, const Repeats& r,
                      std::vector<std::string>& common) const {
    common.assign(words.begin(), words.begin() + std::min<std::ptrdiff_t>(spec_.num_cw, static_cast<std::ptrdiff_t>(words.size())));
    std::vector<std::string> list;
    for (int k = 0; k < r.common; ++k) list.insert(list.end(), common.begin(), common.end());
    for (int k = 0; k < r.uncommon; ++k) list.insert(list.end(), words.begin() + static_cast<std::ptrdiff_t>(common.size()), words.end());
    rng.shuffle(list);
    return numbered(list);
  }

  FamilyInput in_;
  const RulerTaskSpec& spec_;
  Repeats example_{};
  Repeats real_{};
};

}  // namespace

std::unique_ptr<Family> make_common_words(const FamilyInput& in) { return std::make_unique<CommonWords>(in); }

}  // namespace kvlab::datasets::detail
