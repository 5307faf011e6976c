// The RULER-style task families behind RulerGenerator (internal header).
//
// A family builds the text of sample `index` for a haystack of `units` units (noise lines, essay
// words, distractor needles, listed words, coded words, documents); RulerGenerator chooses units so
// that the text fits the budget (ruler_sizing.h) and fills in the sample's bookkeeping.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "datasets/ruler.h"
#include "datasets/task_sample.h"

namespace kvlab::datasets::detail {

inline constexpr std::int64_t kUnbounded = std::int64_t{1} << 40;

// The text parts of one sample, before sizing bookkeeping.
struct Built {
  std::string context;
  std::string question;
  std::string answer_prefix;
  std::vector<std::string> answers;
  std::vector<NeedlePlacement> needles;  // offsets into context, depths filled
  std::int64_t haystack_begin = 0;
  std::int64_t haystack_end = 0;

  std::string prompt_text() const { return context + question + answer_prefix; }
};

struct FamilyInput {
  const RulerTaskSpec* spec = nullptr;
  RulerOptions options;
  RulerResources resources;
  CountTokens count;
  HaystackKind haystack = HaystackKind::none;
  std::int64_t tokens_to_generate = 0;
  std::uint64_t stream = 0;     // hash of (seed, task): the root of every stream of this generator
};

class Family {
 public:
  virtual ~Family() = default;
  virtual std::int64_t min_units(std::int64_t index) const = 0;
  virtual std::int64_t max_units() const { return kUnbounded; }
  virtual std::int64_t probe_units() const = 0;  // a small size for the slope estimate (RULER's increment)
  virtual Built build(std::int64_t index, std::int64_t units) const = 0;  // pure
};

std::unique_ptr<Family> make_niah(const FamilyInput& in);
std::unique_ptr<Family> make_variable_tracking(const FamilyInput& in);
std::unique_ptr<Family> make_common_words(const FamilyInput& in);
std::unique_ptr<Family> make_freq_words(const FamilyInput& in);
std::unique_ptr<Family> make_qa(const FamilyInput& in);

// ---- shared helpers (ruler_assemble.cpp) ----

using Fills = std::vector<std::pair<std::string_view, std::string>>;  // placeholder name → text
std::string fill(std::string_view text, const Fills& fills);            // "{name}" → text, all occurrences

// Formats `task_template` around `haystack` and splits it: context = prefix + the template up to
// {context} + haystack + the whitespace after it; question = the rest of the template; answer_prefix
// filled. `needles` carry offsets relative to `haystack`; they are shifted into the context and
// their depth set to offset / haystack.size().
Built assemble(std::string_view prefix, std::string_view task_template, std::string_view answer_prefix,
               std::string_view haystack, const Fills& fills, std::vector<NeedlePlacement> needles);

// Joins `parts` with `sep`; parts flagged as needles are recorded with their offsets in the result.
struct Piece {
  std::string text;
  bool needle = false;
};
std::string join_pieces(const std::vector<Piece>& pieces, std::string_view sep, std::vector<NeedlePlacement>& needles);

// RULER's DEPTHS = np.round(np.linspace(0, 100, 40)).astype(int).
const std::vector<int>& ruler_depths();

// Sentences with needles between them, RULER's essay insertion: needle k goes after sentence
// int(n_sents · depth_k / 100), depths sorted; empty chunks skipped; joined with " ".
std::string insert_at_sentence_depths(const std::vector<std::string>& sentences, const std::vector<std::string>& needles,
                                      std::vector<double> depths_percent, std::vector<NeedlePlacement>& placed);

}  // namespace kvlab::datasets::detail
