// criticalkv against a plain-loop transcription, written here, of kvpress's CriticalKVPress
// (score: stage 1 top int(n_kept·first_stage_ratio) raised to the largest double, the rest
// (s + ε)·‖W_o·v‖₁ with vwl1norm's per-query-head L1 norms averaged over the GQA group; then
// ScorerPress's per-head top n_kept) and CriticalAdaKVPress (safeguard, head budgets from the
// flattened top H·n_kept, the two stages per head, the flattened prune), fed with the wrapped
// scorer's own scores and W_o from a checkpoint written here; hand-worked cases (first stage
// ratio, epsilon, ties, the budget raised to one token, negative scorer scores); the closed forms
// (first_stage_ratio = 1 is the scorer's own top-k, or adakv with allocation=adaptive); errors
// naming the key or the missing tensor; the registry entry and a chain with KIVI.
//
// Tolerance: none needed. The oracle's norms are plain double loops over the same f32 values and
// weights the method reads (the method: an f64 gemm), so the two differ by summation order only
// (~1e-15 relative); the random fixtures' rescaled scores are separated by far more than that, so
// the kept sets must be equal.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <numeric>
#include <random>
#include <set>

#include "compressors/chain.h"
#include "compressors/methods/eviction.h"
#include "compressors/score.h"
#include "compressors/test_caches.h"
#include "core/error.h"
#include "core/safetensors.h"

namespace kvlab::compressors {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;
using testing::error_of;
using testing::kept_tokens;

constexpr double kMax = std::numeric_limits<double>::max();  // torch.finfo(dtype).max

// A fresh directory per checkpoint: the test's name, the process and a counter.
fs::path fresh_dir() {
  static int count = 0;
  auto dir = fs::temp_directory_path() / fmt::format("kvlab_criticalkv_{}_{}_{}",
                                                     ::testing::UnitTest::GetInstance()->current_test_info()->name(),
                                                     ::getpid(), count++);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

// A checkpoint holding only each layer's o_proj.weight [d_model, H_q·D] (random, f32), in a
// directory removed with the test.
class Weights {
 public:
  Weights(const CacheShape& s, int d_model, unsigned seed, int skip_layer = -1) : d_model_(d_model), dir_(fresh_dir()) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal;
    std::map<std::string, core::TensorToWrite> t;
    const std::int64_t cols = std::int64_t{s.q_heads} * s.head_dim;
    for (int l = 0; l < s.layers; ++l) {
      std::vector<float> w(static_cast<std::size_t>(d_model * cols));
      for (auto& x : w) x = normal(rng) / std::sqrt(static_cast<float>(cols));
      if (l != skip_layer) t[fmt::format("model.layers.{}.self_attn.o_proj.weight", l)] = {{d_model, cols}, w, core::DType::f32};
      w_.push_back(std::move(w));
    }
    core::write_safetensors(dir_ / "model.safetensors", t);
    ckpt_ = std::make_unique<core::Checkpoint>(dir_);
  }
  // A checkpoint holding the given weights (one [d_model, H_q·D] row-major matrix per layer).
  Weights(const std::vector<std::vector<float>>& w, int d_model, std::int64_t cols)
      : d_model_(d_model), dir_(fresh_dir()), w_(w) {
    std::map<std::string, core::TensorToWrite> t;
    for (std::size_t l = 0; l < w.size(); ++l)
      t[fmt::format("model.layers.{}.self_attn.o_proj.weight", l)] = {{d_model, cols}, w[l], core::DType::f32};
    core::write_safetensors(dir_ / "model.safetensors", t);
    ckpt_ = std::make_unique<core::Checkpoint>(dir_);
  }
  ~Weights() {
    ckpt_.reset();
    fs::remove_all(dir_);
  }
  Weights(const Weights&) = delete;
  Weights& operator=(const Weights&) = delete;

  const core::Checkpoint* checkpoint() const { return ckpt_.get(); }
  const std::vector<float>& o_proj(int l) const { return w_[static_cast<std::size_t>(l)]; }
  int d_model() const { return d_model_; }

 private:
  int d_model_;
  fs::path dir_;
  std::vector<std::vector<float>> w_;
  std::unique_ptr<core::Checkpoint> ckpt_;
};

KeepMasks run(const std::string& spec, const CacheSource& cache, const core::Checkpoint* ckpt) {
  return make_eviction(parse_spec(spec).stages.at(0))->select({cache, linalg::cpu_backend(), ckpt});
}

// The scorer's own scores of layer l at budget b, as criticalkv receives them (expected_attention
// with vnorm=off, as kvpress's registry wraps it).
HeadScores scorer_scores(const std::string& scorer, const CacheSource& cache, int l, std::int64_t b) {
  const auto params = scorer == "expected_attention" ? "vnorm=off" : "";
  return make_eviction(parse_stage(method(scorer), params))->score_layer({cache, linalg::cpu_backend()}, l, b);
}

// kvpress CriticalKVPress.vwl1norm, transcribed (bsz = 1): values [T, H_kv, D] (kvlab's layout),
// weight = o_proj.weight [d_model, H_q·D] row-major. Returns [H_kv, T].
//   Wo = weight.T.view(H_q, D, d_model)          → Wo[h][d][j] = weight[j][h·D + d]
//   V = repeat_kv(values, n_rep)                 → query head h reads KV head h // n_rep
//   norm[h][t] = Σ_j |Σ_d V[h][t][d]·Wo[h][d][j]|  (torch.norm(p=1, dim=-1))
//   .view(H_kv, n_rep, T).mean(dim=1)            → KV head g averages heads g·n_rep … g·n_rep + n_rep − 1
std::vector<double> kvpress_vwl1norm(const FloatTensor& values, const std::vector<float>& weight, int d_model, int Hq) {
  const auto T = values.shape[0];
  const int H = static_cast<int>(values.shape[1]), D = static_cast<int>(values.shape[2]);
  const int n_rep = Hq / H;
  std::vector<double> per_query(static_cast<std::size_t>(Hq * T), 0.0);
  for (int h = 0; h < Hq; ++h)
    for (std::int64_t t = 0; t < T; ++t) {
      double l1 = 0;
      for (int j = 0; j < d_model; ++j) {
        double x = 0;
        for (int d = 0; d < D; ++d)
          x += double{values.data[static_cast<std::size_t>((t * H + h / n_rep) * D + d)]} *
               double{weight[static_cast<std::size_t>(j * Hq * D + h * D + d)]};
        l1 += std::abs(x);
      }
      per_query[static_cast<std::size_t>(h * T + t)] = l1;
    }
  std::vector<double> out(static_cast<std::size_t>(H * T), 0.0);
  for (int g = 0; g < H; ++g)
    for (std::int64_t t = 0; t < T; ++t) {
      for (int r = 0; r < n_rep; ++r) out[static_cast<std::size_t>(g * T + t)] += per_query[static_cast<std::size_t>((g * n_rep + r) * T + t)];
      out[static_cast<std::size_t>(g * T + t)] /= n_rep;
    }
  return out;
}

// torch.topk(row, k).indices with ties to the earlier index (torch leaves them unspecified).
std::vector<std::int64_t> topk(const double* row, std::int64_t T, std::int64_t k) {
  std::vector<std::int64_t> order(static_cast<std::size_t>(T));
  std::iota(order.begin(), order.end(), std::int64_t{0});
  std::stable_sort(order.begin(), order.end(), [&](std::int64_t a, std::int64_t b) { return row[a] > row[b]; });
  order.resize(static_cast<std::size_t>(k));
  return order;
}

// kvpress CriticalKVPress.score then ScorerPress.compress (bsz = 1), scores [H, T], n_kept = b
// (kvlab's budget is (1 − compression_ratio)·k_len). Returns the kept mask [T, H].
//   selection_budget = int((1 - compression_ratio) * k_len * first_stage_ratio)
//   top_k_index = topk(scores, selection_budget); scores = (scores + epsilon) * projected_norm
//   scores.scatter_(-1, top_k_index, finfo.max); kept = topk(scores, n_kept)
std::vector<std::uint8_t> kvpress_criticalkv(std::vector<double> scores, const std::vector<double>& norm, std::int64_t T,
                                             int H, std::int64_t n_kept, double epsilon, double first_stage_ratio) {
  const auto selection_budget = static_cast<std::int64_t>(static_cast<double>(n_kept) * first_stage_ratio);
  std::vector<std::uint8_t> kept(static_cast<std::size_t>(T * H), 0);
  for (int h = 0; h < H; ++h) {
    double* row = scores.data() + h * T;
    const auto first = topk(row, T, selection_budget);
    for (std::int64_t t = 0; t < T; ++t) row[t] = (row[t] + epsilon) * norm[static_cast<std::size_t>(h * T + t)];
    for (const auto t : first) row[t] = kMax;
    for (const auto t : topk(row, T, n_kept)) kept[static_cast<std::size_t>(t * H + h)] = 1;
  }
  return kept;
}

// kvpress CriticalAdaKVPress.compress, transcribed (bsz = 1). Returns the kept mask [T, H].
std::vector<std::uint8_t> kvpress_critical_adakv(std::vector<double> scores, const std::vector<double>& norm, std::int64_t T,
                                                 int H, std::int64_t b, double alpha, double epsilon, double first_stage_ratio) {
  const std::int64_t n_kept = std::max<std::int64_t>(1, b);
  const auto n_safe = static_cast<std::int64_t>(static_cast<double>(n_kept) * alpha);
  for (int h = 0; h < H; ++h)  // safeguard: top n_safe of each head → finfo.max
    for (const auto t : topk(scores.data() + h * T, T, n_safe)) scores[static_cast<std::size_t>(h * T + t)] = kMax;
  // Budget allocation: each head's count in the flattened top n_kept·H.
  std::vector<std::int64_t> head_budgets(static_cast<std::size_t>(H), 0);
  for (const auto i : topk(scores.data(), H * T, n_kept * H)) ++head_budgets[static_cast<std::size_t>(i / T)];
  // Stage 1: each head's top int(head_budget · first_stage_ratio) → finfo.max.
  for (int h = 0; h < H; ++h) {
    const auto k1 = static_cast<std::int64_t>(static_cast<double>(head_budgets[static_cast<std::size_t>(h)]) * first_stage_ratio);
    for (const auto t : topk(scores.data() + h * T, T, k1)) scores[static_cast<std::size_t>(h * T + t)] = kMax;
  }
  // Stage 2: (scores + epsilon)·norm, each head's top head_budget → finfo.max.
  for (std::size_t i = 0; i < scores.size(); ++i) scores[i] = (scores[i] + epsilon) * norm[i];
  for (int h = 0; h < H; ++h)
    for (const auto t : topk(scores.data() + h * T, T, head_budgets[static_cast<std::size_t>(h)])) scores[static_cast<std::size_t>(h * T + t)] = kMax;
  // Prune the n_pruned = H·(T − n_kept) lowest of the flattened scores (the later index first on a tie).
  std::vector<std::int64_t> flat(static_cast<std::size_t>(H * T));
  std::iota(flat.begin(), flat.end(), std::int64_t{0});
  std::sort(flat.begin(), flat.end(), [&](std::int64_t a, std::int64_t c) {
    const auto sa = scores[static_cast<std::size_t>(a)], sc = scores[static_cast<std::size_t>(c)];
    return sa != sc ? sa < sc : a > c;
  });
  std::vector<std::uint8_t> kept(static_cast<std::size_t>(T * H), 1);
  for (std::int64_t i = 0; i < H * (T - n_kept); ++i) {
    const auto idx = flat[static_cast<std::size_t>(i)];
    kept[static_cast<std::size_t>((idx % T) * H + idx / T)] = 0;
  }
  return kept;
}

std::int64_t kept_in_layer(const KeepMasks& m, int l) {
  return std::accumulate(m[static_cast<std::size_t>(l)].begin(), m[static_cast<std::size_t>(l)].end(), std::int64_t{0});
}

// L, H_kv, H_q, D, T, W: GQA (n_rep = 2) and MHA, a real RoPE (θ = 10000).
CacheShape gqa_shape() { return {2, 2, 4, 8, 40, 4, 0}; }
CacheShape mha_shape() { return {2, 3, 3, 4, 36, 4, 0}; }

TEST(CriticalKV, KeepsWhatATranscriptionOfCriticalKVPressKeeps) {
  int cases = 0, differs = 0;  // layers whose selection differs from the scorer's alone: the rescaling mattered
  for (const auto& shape : {gqa_shape(), mha_shape()})
    for (std::uint64_t seed : {1u, 2u}) {
      const auto cache = testing::random_cache(shape, seed);
      const Weights w(shape, 12, static_cast<unsigned>(seed) + 10);
      for (const char* scorer : {"knorm", "keydiff", "tova", "expected_attention", "random"})
        for (const double ratio : {0.0, 0.3, 0.5, 1.0})
          for (const double epsilon : {1e-4, 0.5})
            for (const std::int64_t b : {1, 5, 17}) {
              const auto spec = fmt::format("criticalkv:scorer={},budget={},first_stage_ratio={},epsilon={}", scorer, b,
                                            ratio, epsilon);
              const auto masks = run(spec, cache, w.checkpoint());
              const auto alone = run(fmt::format("{}:budget={}", scorer, b), cache, nullptr);
              for (int l = 0; l < shape.layers; ++l) {
                cases += 1;
                differs += masks[static_cast<std::size_t>(l)] != alone[static_cast<std::size_t>(l)];
                const auto scores = scorer_scores(scorer, cache, l, b);
                const auto norm = kvpress_vwl1norm(cache.layer(l, Part::value), w.o_proj(l), w.d_model(), shape.q_heads);
                EXPECT_EQ(masks[static_cast<std::size_t>(l)],
                          kvpress_criticalkv(scores.primary, norm, shape.tokens, shape.kv_heads, b, epsilon, ratio))
                    << spec << " H_q " << shape.q_heads << " seed " << seed << " layer " << l;
                EXPECT_EQ(kept_in_layer(masks, l), shape.kv_heads * b);
              }
            }
    }
  // Stage 2 changes the selection in most cases (not with ratio 1, nor with b = 1 and ratio 0 … 0.5
  // when the best rescaled token is the scorer's best): the comparison above is not the scorer's twice.
  EXPECT_GT(differs, cases / 2) << differs << " of " << cases;
}

TEST(CriticalKV, AdaptiveKeepsWhatATranscriptionOfCriticalAdaKVPressKeeps) {
  for (const auto& shape : {gqa_shape(), mha_shape()})
    for (std::uint64_t seed : {3u, 4u}) {
      const auto cache = testing::random_cache(shape, seed);
      const Weights w(shape, 10, static_cast<unsigned>(seed) + 20);
      for (const char* scorer : {"knorm", "keydiff", "random"})
        for (const double alpha : {0.0, 0.2, 0.6})
          for (const double ratio : {0.0, 0.5, 0.8})
            for (const std::int64_t b : {2, 7, 19}) {
              const auto spec = fmt::format("criticalkv:scorer={},budget={},allocation=adaptive,alpha={},first_stage_ratio={}",
                                            scorer, b, alpha, ratio);
              const auto masks = run(spec, cache, w.checkpoint());
              for (int l = 0; l < shape.layers; ++l) {
                const auto scores = scorer_scores(scorer, cache, l, b);
                const auto norm = kvpress_vwl1norm(cache.layer(l, Part::value), w.o_proj(l), w.d_model(), shape.q_heads);
                EXPECT_EQ(masks[static_cast<std::size_t>(l)],
                          kvpress_critical_adakv(scores.primary, norm, shape.tokens, shape.kv_heads, b, alpha, 1e-4, ratio))
                    << spec << " H_q " << shape.q_heads << " seed " << seed << " layer " << l;
                EXPECT_EQ(kept_in_layer(masks, l), shape.kv_heads * b);  // the layer's total, as adakv
              }
            }
    }
}

TEST(CriticalKV, SnapKVsWindowIsAlwaysKeptAndTheRestFollowsTheTranscription) {
  // snapkv's default window (32) needs W ≥ 32 and a budget above it; its +inf window scores go
  // through the transcription as +inf ((inf + ε)·n = inf for n > 0).
  const CacheShape shape{2, 2, 4, 8, 96, 32, 0};
  const auto cache = testing::random_cache(shape, 5);
  const Weights w(shape, 16, 7);
  for (const double ratio : {0.0, 0.2, 0.5})
    for (const std::int64_t b : {40, 60}) {
      const auto masks = run(fmt::format("criticalkv:budget={},first_stage_ratio={}", b, ratio), cache, w.checkpoint());
      for (int l = 0; l < shape.layers; ++l) {
        const auto scores = scorer_scores("snapkv", cache, l, b);
        const auto norm = kvpress_vwl1norm(cache.layer(l, Part::value), w.o_proj(l), w.d_model(), shape.q_heads);
        EXPECT_EQ(masks[static_cast<std::size_t>(l)], kvpress_criticalkv(scores.primary, norm, shape.tokens, shape.kv_heads, b, 1e-4, ratio))
            << "ratio " << ratio << " budget " << b << " layer " << l;
        for (int g = 0; g < shape.kv_heads; ++g) {
          const auto kept = kept_tokens(masks, l, g, shape);
          for (std::int64_t t = 96 - 32; t < 96; ++t) EXPECT_TRUE(kept.count(t)) << "layer " << l << " head " << g << " token " << t;
        }
      }
    }
}

TEST(CriticalKV, FirstStageRatioOneIsTheScorersOwnSelection) {
  // Stage 1 takes the whole budget: the scorer's per-head top-k, or adakv's cells (each head's
  // share of adakv's cells is a prefix of its own ranking).
  const auto cache = testing::random_cache(gqa_shape(), 6);
  const Weights w(gqa_shape(), 12, 8);
  for (const char* scorer : {"knorm", "keydiff", "tova", "random"})
    for (const char* budget : {"keep=0.25", "budget=3", "keep=0.6"}) {
      EXPECT_EQ(run(fmt::format("criticalkv:scorer={},{},first_stage_ratio=1", scorer, budget), cache, w.checkpoint()),
                run(fmt::format("{}:{}", scorer, budget), cache, nullptr))
          << scorer << " " << budget;
      EXPECT_EQ(run(fmt::format("criticalkv:scorer={},{},first_stage_ratio=1,allocation=adaptive,alpha=0.3", scorer, budget),
                    cache, w.checkpoint()),
                run(fmt::format("adakv:scorer={},{},alpha=0.3", scorer, budget), cache, nullptr))
          << scorer << " " << budget;
    }
}

// One layer, one KV head, two query heads (GQA), D = 2, d_model = 2, identity RoPE. knorm scores
// −‖k‖: keys (a_t, 0) score −a_t. W_o's columns for query head 0 are (1, 0), for head 1 (0, 3)
// (the others 0), so v = (x, 0) gives ‖v·W_o,0‖₁ = |x|, ‖v·W_o,1‖₁ = 3|x| and n = 2|x|.
struct HandCase {
  InMemoryCache cache;
  std::unique_ptr<Weights> weights;
};

HandCase hand_case(const std::vector<float>& a, const std::vector<float>& x) {
  const auto T = static_cast<std::int64_t>(a.size());
  const CacheShape shape{1, 1, 2, 2, T, 1, 0};
  FloatTensor k({T, 1, 2}), v({T, 1, 2}), q({1, 2, 2});
  for (std::int64_t t = 0; t < T; ++t) {
    k.data[static_cast<std::size_t>(t * 2)] = a[static_cast<std::size_t>(t)];
    v.data[static_cast<std::size_t>(t * 2)] = x[static_cast<std::size_t>(t)];
  }
  // weight [d_model = 2, H_q·D = 4]: column 0 (head 0, d 0) = (1, 0), column 2 (head 1, d 0) = (0, 3).
  const std::vector<float> weight{1, 0, 0, 0, 0, 0, 3, 0};
  return {InMemoryCache(shape, {k}, {v}, {q}), std::make_unique<Weights>(std::vector<std::vector<float>>{weight}, 2, 4)};
}

std::set<std::int64_t> kept(const std::string& spec, const HandCase& c) {
  return kept_tokens(run(spec, c.cache, c.weights->checkpoint()), 0, 0, c.cache.shape());
}

TEST(CriticalKV, HandWorkedStagesEpsilonAndTheMinimumBudget) {
  // s = −1 … −6, n = 2|x| = 2, 2, 2, 0.2, 1, 0.02.
  const auto c = hand_case({1, 2, 3, 4, 5, 6}, {1, 1, 1, 0.1f, 0.5f, 0.01f});
  // knorm alone keeps the four shortest keys.
  EXPECT_EQ(kept_tokens(run("knorm:budget=4", c.cache, nullptr), 0, 0, c.cache.shape()), (std::set<std::int64_t>{0, 1, 2, 3}));
  // b = 4, ratio 0.5: stage 1 keeps tokens 0, 1; stage 2 ranks (s + 1e-4)·n of 2…5: −5.9998, −0.79998,
  // −4.9999, −0.119998: tokens 5 and 3 (with knorm's negative scores a larger ‖W_o·v‖ ranks lower).
  EXPECT_EQ(kept("criticalkv:scorer=knorm,budget=4", c), (std::set<std::int64_t>{0, 1, 3, 5}));
  // epsilon = 10 makes s + ε = 9 … 4 positive: stage 2 gets 7·2 = 14, 6·0.2 = 1.2, 5·1 = 5, 4·0.02 = 0.08.
  EXPECT_EQ(kept("criticalkv:scorer=knorm,budget=4,epsilon=10", c), (std::set<std::int64_t>{0, 1, 2, 4}));
  // ratio 0.3: ⌊1.2⌋ = 1 token in stage 1 (token 0); stage 2 of 1…5: −3.9998, −5.9998, −0.79998,
  // −4.9999, −0.119998 → 5, 3, 1.
  EXPECT_EQ(kept("criticalkv:scorer=knorm,budget=4,first_stage_ratio=0.3", c), (std::set<std::int64_t>{0, 1, 3, 5}));
  // ratio 0: all by the rescaled score: −1.9998, −3.9998, −5.9998, −0.79998, −4.9999, −0.119998 → 5, 3, 0, 1.
  EXPECT_EQ(kept("criticalkv:scorer=knorm,budget=4,first_stage_ratio=0", c), (std::set<std::int64_t>{0, 1, 3, 5}));
  EXPECT_EQ(kept("criticalkv:scorer=knorm,budget=2,first_stage_ratio=0", c), (std::set<std::int64_t>{3, 5}));
  // keep = 0.01 of 6 tokens rounds to 0, raised to one token; ⌊0.5⌋ = 0 in stage 1: the best rescaled, token 5.
  EXPECT_EQ(kept("criticalkv:scorer=knorm,keep=0.01", c), (std::set<std::int64_t>{5}));
  // A budget of T keeps everything.
  EXPECT_EQ(kept("criticalkv:scorer=knorm,budget=6", c).size(), 6u);
}

TEST(CriticalKV, TiesGoToTheScorerThenTheEarlierToken) {
  // ε = 0, ratio 0: s = −2, −1, −3, −5 and n = 1, 2, 2, 0.2 give −2, −2, −6, −1: token 3, then the
  // tie at −2 to the higher score s = −1 (token 1).
  const auto c = hand_case({2, 1, 3, 5}, {0.5f, 1, 1, 0.1f});
  EXPECT_EQ(kept("criticalkv:scorer=knorm,budget=2,first_stage_ratio=0,epsilon=0", c), (std::set<std::int64_t>{1, 3}));
  // Every score and every norm equal: stage 1 and stage 2 both take the earliest tokens.
  const auto flat = hand_case({1, 1, 1, 1, 1, 1}, {1, 1, 1, 1, 1, 1});
  EXPECT_EQ(kept("criticalkv:scorer=knorm,budget=3", flat), (std::set<std::int64_t>{0, 1, 2}));
  EXPECT_EQ(kept("criticalkv:scorer=knorm,budget=3,first_stage_ratio=0", flat), (std::set<std::int64_t>{0, 1, 2}));
}

TEST(CriticalKV, NeedsEachLayersOProj) {
  const auto shape = gqa_shape();
  const auto cache = testing::random_cache(shape, 9);
  EXPECT_THAT(error_of([&] { run("criticalkv:scorer=knorm", cache, nullptr); }), HasSubstr("give --model DIR"));
  const Weights missing(shape, 12, 11, /*skip_layer=*/1);
  const auto message = error_of([&] { run("criticalkv:scorer=knorm", cache, missing.checkpoint()); });
  EXPECT_THAT(message, HasSubstr("no tensor 'model.layers.1.self_attn.o_proj.weight'"));
  // o_proj of another model: 6 query heads' columns for a cache with 4.
  const CacheShape six_heads{shape.layers, shape.kv_heads, 6, shape.head_dim, shape.tokens, shape.query_window, 0};
  const Weights other(six_heads, 12, 12);
  EXPECT_THAT(error_of([&] { run("criticalkv:scorer=knorm", cache, other.checkpoint()); }),
              HasSubstr("expected [d_model, H_q·D = 32]"));
  // The budget keeping everything reads no weights.
  EXPECT_EQ(error_of([&] { run("criticalkv:scorer=knorm,keep=1", cache, nullptr); }), "(no error)");
  EXPECT_TRUE(method("criticalkv").needs.checkpoint);
  EXPECT_FALSE(method("criticalkv").needs.attention_inputs || method("criticalkv").needs.live_model);
}

TEST(CriticalKV, RegistryEntryPrintsEveryKeyAndNamesBadKeys) {
  const auto canonical = parse_spec("criticalkv").to_string();
  EXPECT_EQ(canonical,
            "criticalkv:keep=0.25,budget=0,scorer=snapkv,epsilon=1e-04,first_stage_ratio=0.5,allocation=uniform,alpha=0.2");
  EXPECT_EQ(parse_spec(canonical).to_string(), canonical);
  const auto adaptive = parse_spec("criticalkv:allocation=adaptive,alpha=0.5,epsilon=0.01,first_stage_ratio=0.25").to_string();
  EXPECT_EQ(parse_spec(adaptive).to_string(), adaptive);
  const auto& def = method("criticalkv");
  EXPECT_EQ(def.kind, StageKind::eviction);
  EXPECT_EQ(def.device, DevicePath::scores);
  EXPECT_TRUE(def.layer_local);
  EXPECT_THAT(describe_methods(), HasSubstr("criticalkv"));
  EXPECT_THAT(describe_methods(), HasSubstr("first_stage_ratio"));
  EXPECT_THAT(error_of([] { parse_spec("criticalkv:scorer=h2o"); }), HasSubstr("'scorer'"));
  for (const char* bad : {"first_stage_ratio=1.5", "first_stage_ratio=-0.1"})
    EXPECT_THAT(error_of([&] { parse_spec(fmt::format("criticalkv:{}", bad)); }),
                AllOf(HasSubstr("'first_stage_ratio'"), HasSubstr("[0, 1]")))
        << bad;
  EXPECT_THAT(error_of([] { parse_spec("criticalkv:epsilon=-1"); }), AllOf(HasSubstr("'epsilon'"), HasSubstr("[0,")));
  EXPECT_THAT(error_of([] { parse_spec("criticalkv:alpha=2"); }), AllOf(HasSubstr("'alpha'"), HasSubstr("[0, 1]")));
  EXPECT_THAT(error_of([] { parse_spec("criticalkv:allocation=greedy"); }), HasSubstr("'allocation'"));
  EXPECT_THAT(error_of([] { parse_spec("criticalkv:keep=0"); }), HasSubstr("'keep'"));
  EXPECT_THAT(error_of([] { parse_spec("criticalkv:window=8"); }), HasSubstr("unknown key 'window'"));
  // The default scorer (snapkv, window 32) checks its window against the budget, naming it.
  const auto cache = testing::random_cache(gqa_shape(), 1);
  const Weights w(gqa_shape(), 12, 13);
  EXPECT_THAT(error_of([&] { run("criticalkv:budget=10", cache, w.checkpoint()); }),
              AllOf(HasSubstr("criticalkv: its scorer snapkv"), HasSubstr("window")));
}

TEST(CriticalKV, NotesNameTheScorerAndTheStages) {
  const auto stage = make_eviction(parse_spec("criticalkv:scorer=expected_attention,budget=5").stages.at(0));
  const auto n = stage->notes(gqa_shape());
  EXPECT_EQ(n["tokens"], 40);
  EXPECT_EQ(n["budget_per_layer"], nlohmann::json({5, 5}));
  EXPECT_THAT(n["scorer"].get<std::string>(), HasSubstr("vnorm=off"));  // as kvpress's registry wraps it
  EXPECT_EQ(n["first_stage_per_head"], 2);                              // ⌊0.5·5⌋
  EXPECT_EQ(n["allocation"], "uniform");
  const auto ada = make_eviction(parse_spec("criticalkv:scorer=knorm,budget=5,allocation=adaptive,alpha=0.4").stages.at(0));
  EXPECT_EQ(ada->notes(gqa_shape())["alpha"], 0.4);
}

TEST(CriticalKV, ChainsWithKiviKeepingItsOwnMasks) {
  const auto shape = gqa_shape();
  const auto cache = testing::random_cache(shape, 14);
  const Weights w(shape, 12, 15);
  const CompressContext ctx{cache, linalg::cpu_backend(), w.checkpoint()};
  const auto chain = parse_spec("criticalkv:scorer=knorm,keep=0.5+kivi:bits=4,group=8,residual=0");
  EXPECT_TRUE(layer_local(chain));
  const auto c = compress_chain(ctx, chain);
  const auto masks = make_eviction(chain.stages[0])->select(ctx);
  for (int l = 0; l < shape.layers; ++l) EXPECT_EQ(c->reconstruct(l).kept, masks[static_cast<std::size_t>(l)]) << "layer " << l;
  const auto whole = score(cache, *c, linalg::cpu_backend());
  nlohmann::json notes;
  const auto by_layer = compress_and_score_by_layer(ctx, chain, {}, nullptr, &notes);
  EXPECT_EQ(notes, c->notes());
  EXPECT_EQ(by_layer.bytes, whole.bytes);
  EXPECT_DOUBLE_EQ(whole.kept_fraction, 0.5);
}

}  // namespace
}  // namespace kvlab::compressors
