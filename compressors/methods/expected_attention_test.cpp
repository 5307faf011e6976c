// expected_attention against a transcription of kvpress's ExpectedAttentionPress (NVIDIA/kvpress
// kvpress/presses/expected_attention_press.py: get_query_statistics, apply_avg_rope, score) written
// here in plain double loops: dense RoPE matrices R = cos·I + sin·P per future position averaged
// entry by entry, μR̄ᵀ and R̄ΣR̄ᵀ as dense products, HF's apply_rotary_pos_emb on the keys
// (k·cos + rotate_half(k)·sin, angles in fp32 as HF forms them), the einsum's quadratic form,
// softmax, the GQA mean, the value norms and the max + 1 padding of the sinks. Compared on GQA
// and MHA caches with RoPE at several position offsets, with and without covariance and vnorm:
// scores within a tolerance derived from kvlab's f32 key rotation, kept masks exactly. Closed
// forms: the Gaussian moment generating function (identity RoPE), the Dirichlet-kernel average of
// one frequency's rotation, the value-norm rescaling; the statistics window, the sinks, errors,
// the registry entry, chains, and the Ada-KV wrapper.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>

#include "compressors/chain.h"
#include "compressors/score.h"
#include "compressors/test_caches.h"
#include "core/error.h"

namespace kvlab::compressors {
namespace {

using ::testing::HasSubstr;
using testing::error_of;
using testing::kept_tokens;
using testing::top_n;

constexpr double kU32 = 0x1p-24;  // unit roundoff of f32

std::unique_ptr<EvictionStage> stage(std::string_view params) {
  return make_eviction(parse_stage(method("expected_attention"), params));
}
KeepMasks run(std::string_view params, const CacheSource& cache) {
  return stage(params)->select({cache, linalg::cpu_backend()});
}
std::vector<double> scores_of(std::string_view params, const CacheSource& cache, int l) {
  const CompressContext ctx{cache, linalg::cpu_backend()};
  return stage(params)->score_layer(ctx, l, 1).primary;
}

// ---- the oracle: ExpectedAttentionPress.score, transcribed --------------------------------------

struct OracleParams {
  int future = 512, sinks = 4;
  bool cov = true, vnorm = true;
  double epsilon = 0;
  std::vector<std::int64_t> stats_tokens;  // the tokens whose queries are the press's hidden_states[:, n_sink:]
};

struct Oracle {
  std::vector<double> score;  // [H_kv, T]
  std::vector<double> bound;  // [H_kv]: max over t, h of ‖μ̂_h‖‖k_t‖/√D + ‖Σ̂_h‖_F‖k_t‖²/D (tolerance)
};

Oracle ea_oracle(const CacheSource& c, int l, const OracleParams& o) {
  const auto& s = c.shape();
  const std::int64_t T = s.tokens, W = s.query_window;
  const int H = s.kv_heads, Hq = s.q_heads, D = s.head_dim, groups = Hq / H, half = D / 2;
  const auto key = c.layer(l, Part::key), value = c.layer(l, Part::value), query = c.queries(l);
  const auto& inv_freq = c.rope().inv_freq();
  // HF's rotary embedding: cos/sin [D] = cat(freqs, freqs), freqs = position·inv_freq in fp32.
  const auto cos_sin = [&](std::int64_t p, std::vector<double>& cs, std::vector<double>& sn) {
    cs.assign(static_cast<std::size_t>(D), 1.0);
    sn.assign(static_cast<std::size_t>(D), 0.0);
    if (inv_freq.empty()) return;
    for (int i = 0; i < D; ++i) {
      const float f = static_cast<float>(p) * inv_freq[static_cast<std::size_t>(i % half)];
      cs[static_cast<std::size_t>(i)] = std::cos(double{f});
      sn[static_cast<std::size_t>(i)] = std::sin(double{f});
    }
  };
  // apply_avg_rope: position_ids = arange(q_len, q_len + n_future) (kvlab: after the last position),
  // R = cos.unsqueeze(1)·Id + sin.unsqueeze(1)·P, P[D/2:, :D/2] = I, P[:D/2, D/2:] = −I, R.mean(0).
  std::vector<double> Rbar(static_cast<std::size_t>(D * D), 0.0), cs, sn;
  for (int f = 0; f < o.future; ++f) {
    cos_sin(c.positions().back() + 1 + f, cs, sn);
    for (int i = 0; i < D; ++i)
      for (int j = 0; j < D; ++j) {
        const double id = i == j ? 1.0 : 0.0;
        const double p = (i >= half && j == i - half) ? 1.0 : (i < half && j == i + half) ? -1.0 : 0.0;
        Rbar[static_cast<std::size_t>(i * D + j)] += cs[static_cast<std::size_t>(i)] * id + sn[static_cast<std::size_t>(i)] * p;
      }
  }
  for (auto& x : Rbar) x /= o.future;
  // Query statistics per query head (population covariance: / h.shape[1]).
  const auto N = static_cast<double>(o.stats_tokens.size());
  std::vector<std::vector<double>> mu(static_cast<std::size_t>(Hq)), cov(static_cast<std::size_t>(Hq));
  for (int h = 0; h < Hq; ++h) {
    auto& m = mu[static_cast<std::size_t>(h)];
    m.assign(static_cast<std::size_t>(D), 0.0);
    const auto q = [&](std::int64_t t, int d) { return double{query.data[static_cast<std::size_t>(((t - (T - W)) * Hq + h) * D + d)]}; };
    for (const auto t : o.stats_tokens)
      for (int d = 0; d < D; ++d) m[static_cast<std::size_t>(d)] += q(t, d) / N;
    std::vector<double> cv(static_cast<std::size_t>(D * D), 0.0);
    for (const auto t : o.stats_tokens)
      for (int i = 0; i < D; ++i)
        for (int j = 0; j < D; ++j)
          cv[static_cast<std::size_t>(i * D + j)] += (q(t, i) - m[static_cast<std::size_t>(i)]) * (q(t, j) - m[static_cast<std::size_t>(j)]) / N;
    // mu = mu @ R.T; cov = R @ cov @ R.T
    std::vector<double> mr(static_cast<std::size_t>(D), 0.0), rc(static_cast<std::size_t>(D * D), 0.0),
        rcr(static_cast<std::size_t>(D * D), 0.0);
    for (int i = 0; i < D; ++i)
      for (int j = 0; j < D; ++j) mr[static_cast<std::size_t>(i)] += m[static_cast<std::size_t>(j)] * Rbar[static_cast<std::size_t>(i * D + j)];
    for (int i = 0; i < D; ++i)
      for (int j = 0; j < D; ++j)
        for (int k = 0; k < D; ++k) rc[static_cast<std::size_t>(i * D + j)] += Rbar[static_cast<std::size_t>(i * D + k)] * cv[static_cast<std::size_t>(k * D + j)];
    for (int i = 0; i < D; ++i)
      for (int j = 0; j < D; ++j)
        for (int k = 0; k < D; ++k) rcr[static_cast<std::size_t>(i * D + j)] += rc[static_cast<std::size_t>(i * D + k)] * Rbar[static_cast<std::size_t>(j * D + k)];
    m = mr;
    cov[static_cast<std::size_t>(h)] = rcr;
  }
  // Post-RoPE keys as the cache holds them: k·cos + rotate_half(k)·sin at each key's position.
  std::vector<double> k_rot(static_cast<std::size_t>(T * H * D));
  for (std::int64_t t = 0; t < T; ++t) {
    cos_sin(c.positions()[static_cast<std::size_t>(t)], cs, sn);
    for (int g = 0; g < H; ++g)
      for (int i = 0; i < D; ++i) {
        const auto at = [&](int d) { return double{key.data[static_cast<std::size_t>((t * H + g) * D + d)]}; };
        const double rh = i < half ? -at(i + half) : at(i - half);
        k_rot[static_cast<std::size_t>((t * H + g) * D + i)] = at(i) * cs[static_cast<std::size_t>(i)] + rh * sn[static_cast<std::size_t>(i)];
      }
  }
  // score: keys after the sinks, logits, softmax over them, mean over the group, vnorm, pad.
  const std::int64_t n = T - o.sinks;
  Oracle out{std::vector<double>(static_cast<std::size_t>(H * T), 0.0), std::vector<double>(static_cast<std::size_t>(H), 0.0)};
  for (int h = 0; h < Hq; ++h) {
    const int g = h / groups;
    const auto& m = mu[static_cast<std::size_t>(h)];
    const auto& cv = cov[static_cast<std::size_t>(h)];
    double mu_norm = 0, cov_norm = 0;
    for (double x : m) mu_norm += x * x;
    for (double x : cv) cov_norm += x * x;
    mu_norm = std::sqrt(mu_norm);
    cov_norm = o.cov ? std::sqrt(cov_norm) : 0.0;
    std::vector<double> z(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i) {
      const double* k = k_rot.data() + ((o.sinks + i) * H + g) * D;
      double dot = 0, quad = 0, kk = 0;
      for (int a = 0; a < D; ++a) {
        dot += m[static_cast<std::size_t>(a)] * k[a];
        kk += k[a] * k[a];
        for (int b = 0; b < D; ++b) quad += k[a] * cv[static_cast<std::size_t>(a * D + b)] * k[b];
      }
      z[static_cast<std::size_t>(i)] = dot / std::sqrt(double(D)) + (o.cov ? quad / D / 2 : 0.0);
      auto& bound = out.bound[static_cast<std::size_t>(g)];
      bound = std::max(bound, mu_norm * std::sqrt(kk) / std::sqrt(double(D)) + cov_norm * kk / D);
    }
    double denom = 0;
    for (double x : z) denom += std::exp(x);
    for (std::int64_t i = 0; i < n; ++i)
      out.score[static_cast<std::size_t>(g * T + o.sinks + i)] += std::exp(z[static_cast<std::size_t>(i)]) / denom / groups;
  }
  double top = -1e300;
  for (int g = 0; g < H; ++g)
    for (std::int64_t t = o.sinks; t < T; ++t) {
      double& x = out.score[static_cast<std::size_t>(g * T + t)];
      if (o.vnorm) {
        double vv = 0;
        for (int d = 0; d < D; ++d) {
          const double v = value.data[static_cast<std::size_t>((t * H + g) * D + d)];
          vv += v * v;
        }
        x = (x + o.epsilon) * std::sqrt(vv);
      }
      top = std::max(top, x);
    }
  for (int g = 0; g < H; ++g)
    for (std::int64_t t = 0; t < o.sinks; ++t) out.score[static_cast<std::size_t>(g * T + t)] = top + 1;
  return out;
}

// ---- fixtures -----------------------------------------------------------------------------------

// random_cache's N(0,1) keys, values and queries, the queries of head h shifted by 1.5 along
// dimension h mod D (a mean for the first term to see), positions offset + t, RoPE θ = 10000.
InMemoryCache fixture(const CacheShape& s, std::uint64_t seed, std::int64_t offset) {
  const auto base = testing::random_cache(s, seed);
  std::vector<FloatTensor> keys, values, queries;
  for (int l = 0; l < s.layers; ++l) {
    keys.push_back(base.layer(l, Part::key));
    values.push_back(base.layer(l, Part::value));
    auto q = base.queries(l);
    for (std::int64_t w = 0; w < s.query_window; ++w)
      for (int h = 0; h < s.q_heads; ++h) q.data[static_cast<std::size_t>((w * s.q_heads + h) * s.head_dim + (h + l) % s.head_dim)] += 1.5f;
    queries.push_back(std::move(q));
  }
  std::vector<std::int64_t> pos(static_cast<std::size_t>(s.tokens));
  std::iota(pos.begin(), pos.end(), offset);
  return InMemoryCache(s, std::move(keys), std::move(values), std::move(queries), pos,
                       core::Rope::standard(s.head_dim, 10000.0));
}

// The statistics' tokens by the documented rule: the last `window` (0: W) queries, none before `sinks`.
std::vector<std::int64_t> stats_tokens(const CacheShape& s, std::int64_t window, std::int64_t sinks) {
  const auto rows = window > 0 ? window : s.query_window;
  std::vector<std::int64_t> out;
  for (auto t = std::max(s.tokens - rows, sinks); t < s.tokens; ++t) out.push_back(t);
  return out;
}

struct Case {
  std::string params;
  OracleParams o;
  std::int64_t window = 0;
};

std::vector<Case> cases() {
  std::vector<Case> out;
  for (const bool cov : {true, false})
    for (const bool vnorm : {true, false}) {
      const std::string flags = std::string(",cov=") + (cov ? "on" : "off") + ",vnorm=" + (vnorm ? "on" : "off");
      out.push_back({"keep=0.5" + flags, {512, 4, cov, vnorm, 0, {}}});
      out.push_back({"keep=0.3,future=1,sinks=0" + flags, {1, 0, cov, vnorm, 0, {}}});
    }
  out.push_back({"keep=0.4,future=64,sinks=2,epsilon=0.01", {64, 2, true, true, 0.01, {}}});
  out.push_back({"keep=0.6,window=6,sinks=3", {512, 3, true, true, 0, {}}, 6});
  out.push_back({"keep=0.6,window=6,sinks=3,cov=off,future=5", {5, 3, false, true, 0, {}}, 6});
  return out;
}

void expect_matches_oracle(const CacheShape& shape) {
  for (const std::int64_t offset : {0, 37, 1000})
    for (const std::uint64_t seed : {11u, 12u}) {
      const auto cache = fixture(shape, seed, offset);
      const auto& s = cache.shape();
      for (auto c : cases()) {
        c.o.stats_tokens = stats_tokens(s, c.window, c.o.sinks);
        const auto masks = run(c.params, cache);
        const auto b = std::clamp<std::int64_t>(
            std::llround(std::stod(c.params.substr(5, c.params.find(',') - 5)) * static_cast<double>(s.tokens)), 1, s.tokens);
        for (int l = 0; l < s.layers; ++l) {
          const auto want = ea_oracle(cache, l, c.o);
          const auto got = scores_of(c.params, cache, l);
          ASSERT_EQ(got.size(), want.score.size());
          for (int g = 0; g < s.kv_heads; ++g) {
            // kvlab rotates keys in f32: ‖Δk‖ ≤ 8u‖k‖ moves each logit by ≤ 8u·bound, and the softmax
            // (numerator and sum) doubles that as a relative error; the sinks' max + 1 inherits it.
            const double rel = 16 * kU32 * want.bound[static_cast<std::size_t>(g)] + 1e-12;
            const auto what = [&] { return c.params + " offset " + std::to_string(offset) + " seed " + std::to_string(seed) + " layer " + std::to_string(l) + " head " + std::to_string(g); };
            std::vector<double> row(want.score.begin() + g * s.tokens, want.score.begin() + (g + 1) * s.tokens);
            for (std::int64_t t = 0; t < s.tokens; ++t) {
              const auto i = static_cast<std::size_t>(g * s.tokens + t);
              ASSERT_NEAR(got[i], want.score[i], rel * std::abs(want.score[i])) << what() << " token " << t;
            }
            // The kept set: the oracle's top b, provided its b-th and (b+1)-th scores are further apart
            // than the tolerance (else either is right).
            auto sorted = row;
            std::sort(sorted.begin(), sorted.end(), std::greater<>());
            if (b < s.tokens) {
              ASSERT_GT(sorted[static_cast<std::size_t>(b - 1)] - sorted[static_cast<std::size_t>(b)],
                        2 * rel * sorted[static_cast<std::size_t>(b - 1)]) << what() << ": a near tie at the budget";
            }
            EXPECT_EQ(kept_tokens(masks, l, g, s), top_n(row, b)) << what();
          }
        }
      }
    }
}

// L, H_kv, H_q, D, T, W.
TEST(ExpectedAttention, ScoresAndKeepsWhatATranscriptionOfKvpressDoesGqa) {
  expect_matches_oracle({2, 2, 6, 8, 48, 16, 0});  // three query heads per KV head, W < T
}

TEST(ExpectedAttention, ScoresAndKeepsWhatATranscriptionOfKvpressDoesMhaWithEveryQuery) {
  expect_matches_oracle({2, 3, 3, 8, 40, 40, 0});  // W = T: the statistics are kvpress's exactly
}

TEST(ExpectedAttention, ScoresAndKeepsWhatATranscriptionOfKvpressDoesWithFewerQueriesThanChannels) {
  expect_matches_oracle({2, 2, 6, 16, 48, 8, 0});  // N ≤ W = 8 < D = 16: the covariance term factored
}

TEST(ExpectedAttention, QuadraticFormAcrossTokenBlocks) {
  // More keys than one gemm block (2048) of the covariance term: Σ̂ formed (N ≥ D = 4) and
  // factored (N ≤ 8 < D = 16).
  for (const int D : {4, 16}) {
    const CacheShape shape{1, 1, 2, D, 4200, 8, 0};
    const auto cache = fixture(shape, 5, 3);
    const auto want = ea_oracle(cache, 0, {512, 4, true, true, 0, stats_tokens(shape, 0, 4)});
    const auto got = scores_of("keep=0.5", cache, 0);
    const double rel = 16 * kU32 * want.bound[0] + 1e-12;
    for (std::size_t i = 0; i < got.size(); ++i)
      ASSERT_NEAR(got[i], want.score[i], rel * want.score[i]) << "D " << D << " token " << i;
  }
}

// ---- closed forms -------------------------------------------------------------------------------

// One layer, one KV head, `hq` query heads, D = 2, W rows of queries, T keys; values (1, 0).
InMemoryCache small(const std::vector<std::pair<float, float>>& keys, const std::vector<std::pair<float, float>>& queries,
                    core::Rope rope, std::vector<std::int64_t> positions = {},
                    const std::vector<float>& value_norms = {}) {
  const auto T = static_cast<std::int64_t>(keys.size()), W = static_cast<std::int64_t>(queries.size());
  const CacheShape shape{1, 1, 1, 2, T, static_cast<int>(W), 0};
  FloatTensor k({T, 1, 2}), v({T, 1, 2}), q({W, 1, 2});
  for (std::int64_t t = 0; t < T; ++t) {
    k.data[static_cast<std::size_t>(2 * t)] = keys[static_cast<std::size_t>(t)].first;
    k.data[static_cast<std::size_t>(2 * t + 1)] = keys[static_cast<std::size_t>(t)].second;
    v.data[static_cast<std::size_t>(2 * t)] = value_norms.empty() ? 1.0f : value_norms[static_cast<std::size_t>(t)];
  }
  for (std::int64_t w = 0; w < W; ++w) {
    q.data[static_cast<std::size_t>(2 * w)] = queries[static_cast<std::size_t>(w)].first;
    q.data[static_cast<std::size_t>(2 * w + 1)] = queries[static_cast<std::size_t>(w)].second;
  }
  return InMemoryCache(shape, {k}, {v}, {q}, std::move(positions), std::move(rope));
}

TEST(ExpectedAttention, IsTheGaussianMomentGeneratingFunctionWithoutRope) {
  // Queries (1, ±s): μ = (1, 0), Σ = diag(0, s²) (population). Without RoPE the expected logit of
  // key (a, b) is a/√2 + s²b²/(2·2): E[exp(q·k/√D)] = exp(μ·k/√D + kᵀΣk/(2D)) for q ~ N(μ, Σ).
  const float s = 0.8f;
  const std::vector<std::pair<float, float>> keys{{0.5f, 1.0f}, {-1.0f, 2.0f}, {2.0f, 0.0f}, {0.0f, -1.5f}, {1.0f, 1.0f}};
  const auto cache = small(keys, {{1, s}, {1, -s}}, core::Rope::identity());
  for (const bool cov : {true, false}) {
    const auto got = scores_of(std::string("sinks=0,vnorm=off,cov=") + (cov ? "on" : "off"), cache, 0);
    double z_sum = 0;
    std::vector<double> z;
    for (const auto& [a, b] : keys) {
      z.push_back(a / std::sqrt(2.0) + (cov ? double{s} * s * b * b / 4 : 0.0));
      z_sum += std::exp(z.back());
    }
    for (std::size_t t = 0; t < keys.size(); ++t) EXPECT_NEAR(got[t], std::exp(z[t]) / z_sum, 1e-12) << "cov " << cov << " token " << t;
  }
}

TEST(ExpectedAttention, AveragesOneFrequencysRotationOverTheFuturePositions) {
  // D = 2, θ: inv_freq = 1. Query (1, 0), keys (1, 0) at positions p_t; future positions
  // P_i = p_last + 1 + i, i < n. The expected logit is (1/n)Σ_i cos(P_i − p_t)/√2
  // = sin(n/2)/(n·sin(1/2))·cos(P_0 − p_t + (n−1)/2)/√2 (Dirichlet kernel); n = 1 is the
  // attention of the next token's query.
  const std::vector<std::int64_t> pos{0, 3, 4, 9, 10, 15, 21};
  const std::vector<std::pair<float, float>> keys(pos.size(), {1.0f, 0.0f});
  const auto cache = small(keys, {{1, 0}}, core::Rope::standard(2, 10000.0), pos);
  ASSERT_EQ(cache.rope().inv_freq(), std::vector<float>{1.0f});
  for (const int n : {1, 7, 512}) {
    const auto got = scores_of("sinks=0,vnorm=off,future=" + std::to_string(n), cache, 0);
    const double p0 = static_cast<double>(pos.back() + 1);
    const auto z = [&](std::int64_t p) {
      return std::sin(n / 2.0) / (n * std::sin(0.5)) * std::cos(p0 - static_cast<double>(p) + (n - 1) / 2.0) / std::sqrt(2.0);
    };
    // The keys' f32 rotation (|Δk| ≤ 8u) bounds each logit's error; compare log-ratios.
    for (std::size_t t = 1; t < pos.size(); ++t)
      EXPECT_NEAR(std::log(got[t] / got[0]), z(pos[t]) - z(pos[0]), 32 * kU32) << "n " << n << " token " << t;
  }
}

TEST(ExpectedAttention, ValueNormsRescaleAndEpsilonShifts) {
  // A zero query: every logit 0, the expected attention uniform 1/n over the n = T − sinks keys;
  // score (1/n + ε)·‖v‖, the sinks max + 1.
  const std::vector<float> norms{3, 1, 0.5f, 2, 4, 0.25f};
  const std::vector<std::pair<float, float>> keys{{1, 2}, {0, 1}, {3, 0}, {-1, -1}, {2, 2}, {0.5f, 0}};
  const auto cache = small(keys, {{0, 0}, {0, 0}}, core::Rope::standard(2, 10000.0), {}, norms);
  for (const double eps : {0.0, 0.01}) {
    const auto got = scores_of("sinks=2,epsilon=" + format_real(eps), cache, 0);
    const double n = 4;
    double top = 0;
    for (std::size_t t = 2; t < norms.size(); ++t) {
      EXPECT_NEAR(got[t], (1 / n + eps) * norms[t], 1e-15) << t;
      top = std::max(top, (1 / n + eps) * double{norms[t]});
    }
    EXPECT_DOUBLE_EQ(got[0], top + 1);
    EXPECT_DOUBLE_EQ(got[1], top + 1);
  }
  // vnorm=off ignores epsilon (kvpress adds it only inside the value-norm rescaling).
  const auto plain = scores_of("sinks=2,vnorm=off,epsilon=0.5", cache, 0);
  for (std::size_t t = 2; t < norms.size(); ++t) EXPECT_NEAR(plain[t], 0.25, 1e-15);
}

TEST(ExpectedAttention, StatisticsComeFromTheLastWindowQueriesAfterTheSinks) {
  // Identity RoPE, cov=off: scores ∝ exp(μ·k/√2). Keys (t, 0); queries of tokens 0..5 (W = T = 6)
  // (10, 0), (10, 0), (−1, 0), (3, 0), (−1, 0), (−1, 0).
  const std::vector<std::pair<float, float>> keys{{0, 0}, {1, 0}, {2, 0}, {3, 0}, {4, 0}, {5, 0}};
  const auto cache = small(keys, {{10, 0}, {10, 0}, {-1, 0}, {3, 0}, {-1, 0}, {-1, 0}}, core::Rope::identity());
  const auto mean_of = [&](std::string_view params) {  // μ recovered from the ratio of neighbours
    const auto got = scores_of(std::string("vnorm=off,cov=off,") + std::string(params), cache, 0);
    return std::log(got[5] / got[4]) * std::sqrt(2.0);
  };
  EXPECT_NEAR(mean_of("sinks=2,window=0"), (-1 + 3 - 1 - 1) / 4.0, 1e-12);  // the sinks' queries left out
  EXPECT_NEAR(mean_of("sinks=0,window=0"), (10 + 10 - 1 + 3 - 1 - 1) / 6.0, 1e-12);
  EXPECT_NEAR(mean_of("sinks=1,window=2"), -1.0, 1e-12);
  EXPECT_NEAR(mean_of("sinks=1,window=3"), (3 - 1 - 1) / 3.0, 1e-12);
  EXPECT_NEAR(mean_of("sinks=4,window=6"), -1.0, 1e-12);  // window reaches into the sinks: tokens 4, 5
}

TEST(ExpectedAttention, SinksAreKeptFirstInEveryHead) {
  const auto cache = fixture({2, 2, 4, 8, 30, 8, 0}, 4, 0);
  const auto& s = cache.shape();
  for (const auto& [params, want] : std::vector<std::pair<std::string, std::set<std::int64_t>>>{
           {"budget=3", {0, 1, 2}}, {"budget=4", {0, 1, 2, 3}}, {"budget=2,sinks=6", {0, 1}}}) {
    const auto masks = run(params, cache);
    for (int l = 0; l < s.layers; ++l)
      for (int g = 0; g < s.kv_heads; ++g) EXPECT_EQ(kept_tokens(masks, l, g, s), want) << params;
  }
  const auto masks = run("budget=10", cache);
  for (int l = 0; l < s.layers; ++l)
    for (int g = 0; g < s.kv_heads; ++g) {
      const auto kept = kept_tokens(masks, l, g, s);
      EXPECT_EQ(kept.size(), 10u);
      for (std::int64_t t = 0; t < 4; ++t) EXPECT_TRUE(kept.count(t)) << "sink " << t;
    }
}

TEST(ExpectedAttention, BudgetRulesAndWhatTheCacheMustHold) {
  const auto cache = fixture({1, 1, 2, 4, 12, 4, 0}, 6, 0);
  const auto& s = cache.shape();
  for (const auto* p : {"budget=12", "budget=1000", "keep=1"})
    EXPECT_EQ(kept_tokens(run(p, cache), 0, 0, s).size(), 12u) << p;
  EXPECT_EQ(kept_tokens(run("keep=0.5", cache), 0, 0, s).size(), 6u);
  EXPECT_THAT(error_of([&] { run("keep=0.5,window=5", cache); }), HasSubstr("'window' = 5"));
  EXPECT_THAT(error_of([&] { run("keep=0.5,sinks=12", cache); }), HasSubstr("'sinks' = 12"));
  EXPECT_EQ(kept_tokens(run("keep=1,sinks=12", cache), 0, 0, s).size(), 12u);  // nothing to score
  const CacheShape blind_shape{1, 1, 1, 2, 5, 0, 0};
  const InMemoryCache blind(blind_shape, {FloatTensor({5, 1, 2})}, {FloatTensor({5, 1, 2})}, {FloatTensor({0, 1, 2})});
  EXPECT_THAT(error_of([&] { run("budget=2", blind); }), HasSubstr("no queries"));
}

TEST(ExpectedAttention, RegistryEntryPrintsEveryKeyAndNamesBadKeys) {
  const auto canonical = parse_spec("expected_attention").to_string();
  EXPECT_EQ(canonical, "expected_attention:keep=0.25,budget=0,future=512,sinks=4,cov=on,vnorm=on,epsilon=0,window=0");
  EXPECT_EQ(parse_spec(canonical).to_string(), canonical);
  const auto& def = method("expected_attention");
  EXPECT_EQ(def.kind, StageKind::eviction);
  EXPECT_EQ(def.device, DevicePath::scores);
  EXPECT_TRUE(def.layer_local);
  EXPECT_THAT(describe_methods(), HasSubstr("expected_attention"));
  EXPECT_THAT(error_of([] { parse_spec("expected_attention:cov=maybe"); }), HasSubstr("'cov'"));
  EXPECT_THAT(error_of([] { parse_spec("expected_attention:future=0"); }), HasSubstr("'future'"));
  EXPECT_THAT(error_of([] { parse_spec("expected_attention:keep=0"); }), HasSubstr("'keep'"));
  EXPECT_EQ(expand_sweep("expected_attention:keep=[0.25,0.5],cov=[on,off]").size(), 4u);
}

TEST(ExpectedAttention, ChainsWithKiviAndScoresTheSameOneLayerAtATime) {
  const auto whole = testing::expect_eviction_chains_with_kivi("expected_attention:keep=0.5", fixture({3, 2, 4, 8, 40, 8, 0}, 8, 0));
  EXPECT_DOUBLE_EQ(whole.kept_fraction, 0.5);
}

TEST(ExpectedAttention, AdaKvAllocatesItsScoresAcrossHeads) {
  // kvpress's default pipeline press is AdaKVPress(ExpectedAttentionPress(...)). adakv's `scorer`
  // key lists its scorers; the spec is built by hand so this runs whatever that list holds.
  const auto cache = fixture({2, 2, 4, 8, 40, 8, 0}, 9, 5);
  const auto& s = cache.shape();
  auto spec = parse_stage(method("adakv"), "budget=10");
  spec.set("scorer", "expected_attention");
  for (const char* alpha : {"0.2", "1"}) {
    spec.set("alpha", alpha);
    const auto masks = make_eviction(spec)->select({cache, linalg::cpu_backend()});
    const auto plain = run("budget=10", cache);
    for (int l = 0; l < s.layers; ++l) {
      std::size_t kept = 0;
      for (int g = 0; g < s.kv_heads; ++g) {
        const auto tokens = kept_tokens(masks, l, g, s);
        kept += tokens.size();
        for (std::int64_t t = 0; t < 4; ++t) EXPECT_TRUE(tokens.count(t)) << "alpha " << alpha << " sink " << t;
        if (std::string(alpha) == "1") {
          EXPECT_EQ(tokens, kept_tokens(plain, l, g, s));  // per-head top-k
        }
      }
      EXPECT_EQ(kept, 20u) << "alpha " << alpha << " layer " << l;
    }
  }
}

}  // namespace
}  // namespace kvlab::compressors
