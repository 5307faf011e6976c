// Needle in a haystack (RULER's niah.py): niah_single_*, niah_multikey_*, niah_multivalue,
// niah_multiquery.
#include <algorithm>
#include <cmath>
#include <set>

#include "core/error.h"
#include "datasets/py_str.h"
#include "datasets/rng.h"
#include "datasets/ruler_families.h"

namespace kvlab::datasets::detail {

namespace {

constexpr std::string_view kNeedle = "One of the special magic {type_needle_v} for {key} is: {value}.";

std::string_view type_name(NeedleType t) {
  switch (t) {
    case NeedleType::numbers: return "numbers";
    case NeedleType::words: return "words";
    case NeedleType::uuids: return "uuids";
  }
  return "";
}

class Niah final : public Family {
 public:
  explicit Niah(const FamilyInput& in) : in_(in), spec_(*in.spec) {
    num_keys_ = std::max(spec_.num_keys, spec_.num_queries);  // RULER: num_needle_k = max(k, q)
    const bool needs_words = spec_.key_type == NeedleType::words || spec_.value_type == NeedleType::words;
    if (needs_words && (!in_.resources.words || in_.resources.words->size() < 2)) {
      fail("ruler:{} needs a word list for its keys (default {}, from Debian's wamerican; or give a file)",
           spec_.name, kDefaultWordFile);
    }
    if (in_.haystack == HaystackKind::essay && !in_.resources.essay) {
      fail("ruler:{} needs an essay haystack: give a text file (RULER uses Paul Graham's essays), or use the noise "
           "haystack",
           spec_.name);
    }
  }

  std::int64_t num_needles() const { return static_cast<std::int64_t>(num_keys_) * spec_.num_values; }

  std::int64_t min_units(std::int64_t) const override {
    return in_.haystack == HaystackKind::essay ? 1 : num_needles();
  }
  std::int64_t probe_units() const override {
    if (in_.haystack == HaystackKind::essay) return 500;
    return in_.options.max_seq_length < 4096 ? 5 : 25;
  }

  Built build(std::int64_t index, std::int64_t units) const override {
    Rng rng({in_.stream, name_hash("niah"), static_cast<std::uint64_t>(index)});
    std::set<std::string> used;
    auto fresh = [&](NeedleType t) {
      while (true) {
        std::string s = random_of(rng, t);
        if (used.insert(s).second) return s;
      }
    };
    std::vector<std::string> keys;
    std::vector<std::vector<std::string>> values;
    std::vector<std::string> needles;
    for (int k = 0; k < num_keys_; ++k) {
      keys.push_back(fresh(spec_.key_type));
      values.emplace_back();
      for (int v = 0; v < spec_.num_values; ++v) {
        values.back().push_back(fresh(spec_.value_type));
        needles.push_back(needle(keys.back(), values.back().back()));
      }
    }
    rng.shuffle(needles);
    const auto picked = rng.sample(num_keys_, spec_.num_queries);
    std::vector<std::string> queries;
    std::vector<std::string> answers;
    for (const auto i : picked) {
      queries.push_back(keys[static_cast<std::size_t>(i)]);
      for (const auto& v : values[static_cast<std::size_t>(i)]) answers.push_back(v);
    }
    std::string query = queries.back();  // RULER: "a, b, c, and d"; one key as itself
    if (queries.size() > 1) {
      query = py::join(std::vector<std::string>(queries.begin(), queries.end() - 1), ", ") + ", and " + queries.back();
    }

    Rng hay({in_.stream, name_hash("niah-haystack"), static_cast<std::uint64_t>(index)});
    std::vector<NeedlePlacement> placed;
    std::string haystack;
    if (in_.haystack == HaystackKind::essay) {
      std::vector<double> depths;
      if (in_.options.depth_percent) {
        depths.assign(needles.size(), *in_.options.depth_percent);
      } else {
        for (const auto i : hay.sample(static_cast<std::int64_t>(ruler_depths().size()),
                                       static_cast<std::int64_t>(needles.size()))) {
          depths.push_back(ruler_depths()[static_cast<std::size_t>(i)]);
        }
      }
      haystack = insert_at_sentence_depths(in_.resources.essay->sentences(units), needles, depths, placed);
    } else {
      haystack = lines_with_needles(hay, units, needles, used, placed);
    }

    RulerTemplate t = ruler_template(RulerFamily::niah);
    std::string task_template(t.task_template);
    std::string answer_prefix(t.answer_prefix);
    std::string type_v(type_name(spec_.value_type));
    if (spec_.num_queries * spec_.num_values == 1) {  // RULER's singular rewrite, in this order
      for (auto* s : {&task_template, &answer_prefix}) {
        *s = py::replace_all(*s, "Some", "A");
        *s = py::replace_all(*s, "are all", "is");
        *s = py::replace_all(*s, "are", "is");
        *s = py::replace_all(*s, "answers", "answer");
      }
      type_v.pop_back();
    }
    Built b = assemble("", task_template, answer_prefix, haystack, {{"type_needle_v", type_v}, {"query", query}},
                       std::move(placed));
    b.answers = std::move(answers);
    return b;
  }

 private:
  std::string random_of(Rng& rng, NeedleType t) const {
    switch (t) {
      case NeedleType::numbers:
        return std::to_string(rng.between(1000000, 9999999));  // 7 digits
      case NeedleType::words: {
        const auto& w = in_.resources.words->words();
        const auto n = static_cast<std::int64_t>(w.size());
        return w[static_cast<std::size_t>(rng.below(n))] + "-" + w[static_cast<std::size_t>(rng.below(n))];
      }
      case NeedleType::uuids: {
        // uuid.UUID(int=getrandbits(128), version=4): version nibble 4, variant bits 10.
        std::uint64_t hi = rng.bits();
        std::uint64_t lo = rng.bits();
        hi = (hi & ~std::uint64_t{0xF000}) | std::uint64_t{0x4000};
        lo = (lo & ~(std::uint64_t{0xC000} << 48)) | (std::uint64_t{0x8000} << 48);
        return fmt::format("{:08x}-{:04x}-{:04x}-{:04x}-{:012x}", hi >> 32, (hi >> 16) & 0xFFFF, hi & 0xFFFF, lo >> 48,
                           lo & 0xFFFFFFFFFFFFULL);
      }
    }
    return {};
  }

  std::string needle(const std::string& key, const std::string& value) const {
    // The needle always uses the plural type name (RULER formats it with args.type_needle_v).
    return fill(kNeedle, {{"type_needle_v", std::string(type_name(spec_.value_type))}, {"key", key}, {"value", value}});
  }

  // noise / needle haystacks: `units` lines joined with "\n", needles inserted before line positions.
  std::string lines_with_needles(Rng& rng, std::int64_t units, const std::vector<std::string>& needles,
                                 const std::set<std::string>& used, std::vector<NeedlePlacement>& placed) const {
    const auto k = static_cast<std::int64_t>(needles.size());
    std::vector<std::int64_t> position(needles.size());
    if (in_.options.depth_percent) {
      const auto at = static_cast<std::int64_t>(std::nearbyint(*in_.options.depth_percent / 100.0 * static_cast<double>(units)));
      std::fill(position.begin(), position.end(), std::clamp<std::int64_t>(at, 0, units));
    } else {
      // RULER: indexes = sorted(random.sample(range(n), k), reverse=True); needle j goes before line indexes[j].
      auto idx = rng.sample(units, k);
      std::sort(idx.rbegin(), idx.rend());
      position = idx;
    }
    std::vector<std::vector<std::size_t>> before(static_cast<std::size_t>(units) + 1);
    for (std::size_t j = 0; j < needles.size(); ++j) before[static_cast<std::size_t>(position[j])].push_back(j);
    std::vector<Piece> pieces;
    pieces.reserve(static_cast<std::size_t>(units + k));
    for (std::int64_t u = 0; u <= units; ++u) {
      // Needles sharing a line go in reverse order: RULER's successive inserts at one index.
      const auto& here = before[static_cast<std::size_t>(u)];
      for (auto it = here.rbegin(); it != here.rend(); ++it) pieces.push_back({needles[*it], true});
      if (u == units) break;
      if (in_.haystack == HaystackKind::needle) {
        std::string key;
        do {
          key = random_of(rng, spec_.key_type);
        } while (used.count(key));  // a distractor never repeats a real key
        pieces.push_back({needle(key, random_of(rng, spec_.value_type)), false});
      } else {
        pieces.push_back({std::string(kNoiseUnit), false});
      }
    }
    return join_pieces(pieces, "\n", placed);
  }

  FamilyInput in_;
  const RulerTaskSpec& spec_;
  int num_keys_ = 1;
};

}  // namespace

std::unique_ptr<Family> make_niah(const FamilyInput& in) { return std::make_unique<Niah>(in); }

}  // namespace kvlab::datasets::detail
