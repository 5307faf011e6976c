// random: keeps, per layer and KV head, a seeded uniformly random set of `budget` tokens: the
// baseline every selection method should beat (docs/methods/random.md). kvpress's RandomPress
// (NVIDIA/kvpress kvpress/presses/random_press.py): torch.rand scores per (KV head, token), then
// ScorerPress's top-k per KV head; with a seed, a generator seeded afresh at every layer's call.
//
// Knob `layers`: `independent` (default) draws each layer's scores from its own stream (seed and
// layer), so layers evict different tokens; `same` gives every layer the same scores, as
// kvpress's seeded generator does (it is re-seeded for each layer). The budget is every eviction
// method's (eviction.h eviction_budget). Scores are 53-bit uniform doubles from std::mt19937_64,
// so a seed gives the same cache on every platform.
#include <random>

#include "compressors/methods/eviction.h"
#include "core/error.h"

namespace kvlab::compressors {
namespace {

class Random final : public BudgetedEviction {
 public:
  explicit Random(const StageSpec& spec)
      : BudgetedEviction(spec), seed_(static_cast<std::uint64_t>(spec.get_int("seed"))), same_(spec.get("layers") == "same") {}

  HeadScores score_layer(const CompressContext& ctx, int l, std::int64_t) const override {
    const auto& s = ctx.cache.shape();
    const std::int64_t T = s.tokens;
    const int H = s.kv_heads;
    // One stream per layer (or one for all): the seed and the layer through seed_seq's mixing.
    std::seed_seq seq{seed_ & 0xffffffffu, seed_ >> 32, static_cast<std::uint64_t>(same_ ? 0 : l + 1)};
    std::mt19937_64 rng(seq);
    HeadScores out{std::vector<double>(static_cast<std::size_t>(H * T)), {}};  // head by head, as kvpress's [H_kv, T]
    for (auto& x : out.primary) x = static_cast<double>(rng() >> 11) * 0x1.0p-53;
    return out;
  }

  void add_notes(const CacheShape&, nlohmann::json& n) const override {
    n["seed"] = seed_;
    n["layers"] = spec_.get("layers");
  }

 private:
  std::uint64_t seed_;
  bool same_;
};

}  // namespace

MethodDef random_method() {
  return eviction_method<Random>({"random", StageKind::eviction,
              "random (docs/methods/random.md; kvpress RandomPress): keeps, per layer and KV head, a seeded uniformly "
              "random set of budget tokens; the floor every selection method should clear.",
              {eviction_keep_param(), eviction_budget_param(),
               {"seed", ParamType::integer, "0", "random seed (the same seed keeps the same tokens)", {}, 0, 9007199254740991.0},
               {"layers", ParamType::choice, "independent",
                "independent: each layer draws its own tokens; same: every layer the same (kvpress's seeded generator, "
                "re-seeded per layer)",
                {"independent", "same"}}},
              check_eviction_budget});
}

}  // namespace kvlab::compressors
