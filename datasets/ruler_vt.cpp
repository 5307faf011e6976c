// Variable tracking (RULER's variable_tracking.py): chains "VAR X0 = 12345", "VAR X1 = VAR X0 ", ...
// hidden in the noise haystack (or an essay), preceded by a one-shot example.
#include <algorithm>
#include <set>

#include "core/error.h"
#include "datasets/py_str.h"
#include "datasets/rng.h"
#include "datasets/ruler_families.h"
#include "datasets/ruler_sizing.h"

namespace kvlab::datasets::detail {

namespace {

constexpr std::int64_t kIclTokens = 500;  // RULER sizes the one-shot example to 500 tokens

struct Chains {
  std::vector<std::vector<std::string>> names;       // [chain][hop + 1]
  std::vector<std::vector<std::string>> statements;  // [chain][hop + 1]
  std::vector<std::string> values;                   // [chain]
};

std::string random_name(Rng& rng, int letters) {
  std::string s;
  for (int i = 0; i < letters; ++i) s += static_cast<char>('A' + rng.below(26));
  return s;
}

// Chains with names of `letters` letters unique within `used`, values 5-digit (numpy randint(10000, 99999)).
Chains make_chains(Rng& rng, int chains, int hops, int letters, std::set<std::string>& used) {
  Chains c;
  for (int k = 0; k < chains; ++k) {
    std::vector<std::string> names;
    for (int h = 0; h <= hops; ++h) {
      std::string n;
      do {
        n = random_name(rng, letters);
      } while (!used.insert(n).second);
      names.push_back(n);
    }
    std::string value;
    do {
      value = std::to_string(rng.between(10000, 99998));
    } while (!used.insert(value).second);
    std::vector<std::string> st = {"VAR " + names[0] + " = " + value};
    for (int h = 0; h < hops; ++h) st.push_back("VAR " + names[h + 1] + " = VAR " + names[h] + " ");
    c.names.push_back(std::move(names));
    c.statements.push_back(std::move(st));
    c.values.push_back(std::move(value));
  }
  return c;
}

// RULER's noise insertion: per chain, sorted random positions among the current lines; statement j
// goes in at position_j + j (chain order kept). Lines joined with "\n".
std::string noise_with_chains(Rng& rng, std::int64_t units, const Chains& c, std::vector<NeedlePlacement>& placed) {
  std::vector<Piece> lines(static_cast<std::size_t>(units), Piece{std::string(kNoiseUnit), false});
  for (const auto& chain : c.statements) {
    auto pos = rng.sample(static_cast<std::int64_t>(lines.size()), static_cast<std::int64_t>(chain.size()));
    std::sort(pos.begin(), pos.end());
    for (std::size_t j = 0; j < chain.size(); ++j) {
      lines.insert(lines.begin() + static_cast<std::ptrdiff_t>(pos[j] + static_cast<std::int64_t>(j)), Piece{chain[j], true});
    }
  }
  // RULER then replaces ". \n" with ".\n": no line here ends with ". ", so that is a no-op.
  return join_pieces(lines, "\n", placed);
}

class VariableTracking final : public Family {
 public:
  explicit VariableTracking(const FamilyInput& in) : in_(in), spec_(*in.spec) {
    if (in_.haystack == HaystackKind::essay && !in_.resources.essay) {
      fail("ruler:vt with the essay haystack needs an essay text file");
    }
    icl_hops_ = std::min(10, spec_.num_hops);
    // Size the one-shot example once: the largest noise that keeps it within 500 tokens.
    Rng names_rng({in_.stream, name_hash("vt-icl-size")});
    std::set<std::string> used;
    const Chains probe = make_chains(names_rng, spec_.num_chains, icl_hops_, 3, used);
    SizeSearch s;
    s.budget = kIclTokens;
    s.min_units = icl_hops_ + 1;
    s.max_units = kUnbounded;
    s.start = 5;
    s.tokens_per_unit = 20;
    const SizeFit fit = fit_size([&](std::int64_t n) { return in_.count(icl_question(n, probe)); }, s);
    icl_units_ = fit.units;  // RULER keeps its increment (5 lines) when nothing fits; so do we
  }

  std::int64_t min_units(std::int64_t) const override {
    return in_.haystack == HaystackKind::essay ? 1 : static_cast<std::int64_t>(spec_.num_hops) + 1;
  }
  std::int64_t probe_units() const override {
    if (in_.haystack == HaystackKind::essay) return 500;
    return in_.options.max_seq_length < 4096 ? 5 : 10;
  }

  Built build(std::int64_t index, std::int64_t units) const override {
    Rng rng({in_.stream, name_hash("vt"), static_cast<std::uint64_t>(index)});
    std::set<std::string> used;
    const Chains real = make_chains(rng, spec_.num_chains, spec_.num_hops, 5, used);
    const Chains icl = make_chains(rng, spec_.num_chains, icl_hops_, 3, used);

    Rng hay({in_.stream, name_hash("vt-haystack"), static_cast<std::uint64_t>(index)});
    std::vector<NeedlePlacement> placed;
    std::string haystack;
    if (in_.haystack == HaystackKind::essay) {
      // Chains interleaved (order kept within each chain), each statement stripped + ".", at depths.
      std::vector<std::size_t> next(real.statements.size(), 0);
      std::vector<std::string> flat;
      while (true) {
        std::vector<std::size_t> open;
        for (std::size_t k = 0; k < next.size(); ++k) {
          if (next[k] < real.statements[k].size()) open.push_back(k);
        }
        if (open.empty()) break;
        const std::size_t k = open[static_cast<std::size_t>(hay.below(static_cast<std::int64_t>(open.size())))];
        flat.push_back(py::strip(real.statements[k][next[k]++]) + ".");
      }
      if (flat.size() > ruler_depths().size()) fail("ruler:vt: at most {} statements fit RULER's depths", ruler_depths().size());
      std::vector<double> depths;
      for (const auto i : hay.sample(static_cast<std::int64_t>(ruler_depths().size()), static_cast<std::int64_t>(flat.size()))) {
        depths.push_back(ruler_depths()[static_cast<std::size_t>(i)]);
      }
      haystack = insert_at_sentence_depths(in_.resources.essay->sentences(units), flat, depths, placed);
    } else {
      haystack = noise_with_chains(hay, units, real, placed);
    }

    const RulerTemplate t = ruler_template(RulerFamily::variable_tracking);
    const std::string prefix = icl_example(icl) + "\n";
    Built b = assemble(prefix, t.task_template, t.answer_prefix, haystack,
                       {{"query", real.values[0]}, {"num_v", std::to_string(spec_.num_hops + 1)}}, std::move(placed));
    b.answers = real.names[0];
    return b;
  }

 private:
  // The one-shot example's prompt (template + answer prefix, no answers): what RULER sizes to 500 tokens.
  std::string icl_question(std::int64_t units, const Chains& icl) const {
    Rng pos({in_.stream, name_hash("vt-icl-positions")});  // positions fixed per (seed, task)
    std::vector<NeedlePlacement> ignored;
    const std::string noise = noise_with_chains(pos, units, icl, ignored);
    const RulerTemplate t = ruler_template(RulerFamily::variable_tracking);
    const Fills fills = {{"context", noise}, {"query", icl.values[0]}, {"num_v", std::to_string(icl_hops_ + 1)}};
    return fill(t.task_template, fills) + fill(t.answer_prefix, fills);
  }

  // RULER: input + " " + " ".join(answers) + "\n" (the answer prefix already ends with a space).
  std::string icl_example(const Chains& icl) const {
    return icl_question(icl_units_, icl) + " " + py::join(icl.names[0], " ") + "\n";
  }

  FamilyInput in_;
  const RulerTaskSpec& spec_;
  int icl_hops_ = 4;
  std::int64_t icl_units_ = 5;
};

}  // namespace

std::unique_ptr<Family> make_variable_tracking(const FamilyInput& in) { return std::make_unique<VariableTracking>(in); }

}  // namespace kvlab::datasets::detail
