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

class Random final : public EvictionStage {
 public:
  explicit Random(const StageSpec& spec)
      : spec_(spec), seed_(static_cast<std::uint64_t>(spec.get_int("seed"))), same_(spec.get("layers") == "same") {}

  std::vector<std::uint8_t> select_layer(const CompressContext& ctx, int l) const override {
    const auto& s = ctx.cache.shape();
    const std::int64_t T = s.tokens;
    const int H = s.kv_heads;
    if (l < 0 || l >= s.layers) fail("random: layer {} is outside 0..{}", l, s.layers - 1);
    const auto b = eviction_budget(spec_, T);
    std::vector<std::uint8_t> mask(static_cast<std::size_t>(T * H), static_cast<std::uint8_t>(b >= T));
    if (b >= T) return mask;
    // One stream per layer (or one for all): the seed and the layer through seed_seq's mixing.
    std::seed_seq seq{seed_ & 0xffffffffu, seed_ >> 32, static_cast<std::uint64_t>(same_ ? 0 : l + 1)};
    std::mt19937_64 rng(seq);
    std::vector<double> score(static_cast<std::size_t>(T));  // head by head, as kvpress's [H_kv, T]
    for (int g = 0; g < H; ++g) {
      for (auto& x : score) x = static_cast<double>(rng() >> 11) * 0x1.0p-53;
      keep_top_scores(score, score, T, b, H, g, mask);
    }
    return mask;
  }

  nlohmann::json notes(const CacheShape& s) const override {
    return {{"tokens", s.tokens},
            {"budget_per_layer", std::vector<std::int64_t>(static_cast<std::size_t>(s.layers), eviction_budget(spec_, s.tokens))},
            {"seed", seed_},
            {"layers", spec_.get("layers")}};
  }

 private:
  StageSpec spec_;
  std::uint64_t seed_;
  bool same_;
};

}  // namespace

MethodDef random_method() {
  MethodDef m{"random", StageKind::eviction,
              "random (docs/methods/random.md; kvpress RandomPress): keeps, per layer and KV head, a seeded uniformly "
              "random set of budget tokens; the floor every selection method should clear.",
              {eviction_keep_param(), eviction_budget_param(),
               {"seed", ParamType::integer, "0", "random seed (the same seed keeps the same tokens)", {}, 0, 9007199254740991.0},
               {"layers", ParamType::choice, "independent",
                "independent: each layer draws its own tokens; same: every layer the same (kvpress's seeded generator, "
                "re-seeded per layer)",
                {"independent", "same"}}},
              check_eviction_budget};
  m.make_eviction = [](const StageSpec& spec) -> std::unique_ptr<EvictionStage> { return std::make_unique<Random>(spec); };
  m.layer_local = true;
  m.device = DevicePath::scores;  // reads nothing of the cache: the masks are all it writes
  return m;
}

}  // namespace kvlab::compressors
