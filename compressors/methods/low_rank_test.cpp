// Oracles: matrices with planted spectra (the Eckart–Young tail is known by construction),
// LAPACK's gesdd of the same matrix in f64 (a different algorithm from the Gram route),
// hand-computed byte counts, and the authors' published ratios (docs/methods/svd-xkv.md §6).
#include <gtest/gtest.h>

#include <Eigen/Dense>
#include <cmath>
#include <mutex>
#include <set>

#include "compressors/methods/low_rank.h"
#include "compressors/test_caches.h"
#include "core/error.h"
#include "linalg/test_matrices.h"

namespace kvlab::compressors {
namespace {

using Eigen::MatrixXd;
using Eigen::VectorXd;
using RowMatrixXd = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

linalg::Backend& be() { return linalg::cpu_backend(); }

StageSpec xkv(std::string_view p) { return parse_stage(xkv_method(), p); }
StageSpec svd(std::string_view p) { return parse_stage(svd_method(), p); }

FloatTensor to_tensor(const MatrixXd& m, int heads, int dim) {
  FloatTensor t({m.rows(), heads, dim});
  for (Eigen::Index i = 0; i < m.rows(); ++i)
    for (Eigen::Index j = 0; j < m.cols(); ++j) t.data[static_cast<std::size_t>(i * m.cols() + j)] = float(m(i, j));
  return t;
}

MatrixXd to_matrix(const FloatTensor& t) {
  const auto rows = t.shape.at(0), cols = t.shape.at(1) * t.shape.at(2);
  MatrixXd m(rows, cols);
  for (std::int64_t i = 0; i < rows; ++i)
    for (std::int64_t j = 0; j < cols; ++j) m(i, j) = t.data[static_cast<std::size_t>(i * cols + j)];
  return m;
}

// A cache whose layers are the given T×(H·D) matrices (keys), values = keys scaled by 0.5.
InMemoryCache cache_of(const std::vector<MatrixXd>& keys, int heads, int dim) {
  CacheShape shape{static_cast<int>(keys.size()), heads, heads, dim, keys.at(0).rows(), 0, 0};
  std::vector<FloatTensor> k, v, q;
  for (const auto& m : keys) {
    k.push_back(to_tensor(m, heads, dim));
    v.push_back(to_tensor(0.5 * m, heads, dim));
    q.push_back(FloatTensor({0, heads, dim}));
  }
  return InMemoryCache(shape, std::move(k), std::move(v), std::move(q));
}

// The group matrix [X_l … X_{l+G−1}] as the float data the compressor sees, in f64.
MatrixXd group_matrix(const CacheSource& cache, const std::vector<int>& layers, Part part) {
  const auto& s = cache.shape();
  MatrixXd x(s.tokens, s.width() * static_cast<std::int64_t>(layers.size()));
  for (std::size_t i = 0; i < layers.size(); ++i)
    x.middleCols(static_cast<Eigen::Index>(i) * s.width(), s.width()) = to_matrix(cache.layer(layers[i], part));
  return x;
}

MatrixXd rebuilt_group(const Compressed& rep, const CacheShape& s, const std::vector<int>& layers, Part part) {
  MatrixXd x(s.tokens, s.width() * static_cast<std::int64_t>(layers.size()));
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const auto kv = rep.reconstruct(layers[i]);
    x.middleCols(static_cast<Eigen::Index>(i) * s.width(), s.width()) = to_matrix(part == Part::key ? kv.key : kv.value);
  }
  return x;
}

// Optimal rank-r error ‖X − X_r‖_F from LAPACK's f64 gesdd of X (the independent oracle).
double gesdd_tail(MatrixXd x, std::int64_t r) {
  const auto k = std::min(x.rows(), x.cols());
  VectorXd s(k);
  be().svd_thin(x.data(), x.rows(), x.cols(), x.rows(), s.data(), nullptr, 0, nullptr, 0);
  return std::sqrt(s.tail(k - std::min<Eigen::Index>(r, k)).squaredNorm());
}

// The rank-r reconstruction from gesdd's factors: U_r·Σ_r·V_rᵀ.
MatrixXd gesdd_truncation(MatrixXd x, std::int64_t r) {
  const auto m = x.rows(), n = x.cols(), k = std::min(m, n);
  VectorXd s(k);
  MatrixXd u(m, k), vt(k, n);
  be().svd_thin(x.data(), m, n, m, s.data(), u.data(), m, vt.data(), k);
  return u.leftCols(r) * s.head(r).asDiagonal() * vt.topRows(r);
}

CompressContext ctx_of(const CacheSource& cache) { return CompressContext{cache, be(), nullptr}; }

// Eckart–Young: the rank-r error equals the planted tail √Σ_{i>r} σ_i², the reconstruction
// equals gesdd's truncation of the same matrix, and notes() predicts the error from the
// eigenvalues. Both routes: the column Gram (T = 600 ≥ 64 columns) and the token Gram (T = 40 < 64).
// Tolerances: σ_r/σ₁ ≈ 0.1 here, so even the f32 Gram resolves σ_r to ~1e-5 relative; the data,
// A and B are f32, so ~1e-6 relative to ‖X‖ is the floor.
TEST(LowRank, TruncationErrorIsTheEigenTailAndMatchesGesdd) {
  const int H = 4, D = 16, N = H * D, r = 12;
  for (const int T : {600, 40}) {
    const int k = std::min(T, N);
    VectorXd sigma = linalg::testing::geometric_spectrum(k, 50.0, 1e-3);
    const MatrixXd x = linalg::testing::matrix_with_spectrum(T, N, sigma, 5);
    const auto cache = cache_of({x}, H, D);
    for (const char* prec : {"f64", "f32"}) {
      SCOPED_TRACE(fmt::format("T={} {}", T, prec));
      auto rep = make_low_rank(svd(fmt::format("rk={},rv={},precision={}", r, r, prec)))->compress(ctx_of(cache));
      const MatrixXd xf = group_matrix(cache, {0}, Part::key);
      const MatrixXd xhat = rebuilt_group(*rep, cache.shape(), {0}, Part::key);
      const double tail = std::sqrt(sigma.tail(k - r).squaredNorm());
      EXPECT_NEAR((xf - xhat).norm(), tail, 1e-5 * xf.norm());
      EXPECT_NEAR((xf - xhat).norm(), gesdd_tail(xf, r), 1e-5 * xf.norm());
      EXPECT_LT((xhat - gesdd_truncation(xf, r)).norm(), 1e-5 * xf.norm());
      const double predicted = rep->notes()["groups"][0]["key"]["predicted_rel_error"];
      EXPECT_NEAR(predicted, tail / xf.norm(), 1e-4 * tail / xf.norm());
      EXPECT_EQ(rep->notes()["groups"][0]["key"]["route"], std::string(T >= N ? "gram-" : "token-gram-") + prec);
    }
  }
}

// xkv with g = 1 is svd: the same stored tensors and reconstructions, bit for bit.
TEST(LowRank, XkvWithGroupSizeOneIsSvd) {
  const CacheShape shape{3, 2, 4, 16, 200, 0, 0};
  const auto cache = testing::random_cache(shape, 3);
  auto a = make_low_rank(xkv("g=1,rk=7,rv=9"))->compress(ctx_of(cache));
  auto b = make_low_rank(svd("rk=7,rv=9"))->compress(ctx_of(cache));
  ASSERT_EQ(a->stored().size(), b->stored().size());
  EXPECT_EQ(testing::stored_bytes(*a), testing::stored_bytes(*b));
  for (int l = 0; l < shape.layers; ++l) {
    EXPECT_EQ(a->reconstruct(l).key.data, b->reconstruct(l).key.data) << l;
    EXPECT_EQ(a->reconstruct(l).value.data, b->reconstruct(l).value.data) << l;
  }
  EXPECT_DOUBLE_EQ(a->notes()["authors_ratio"].get<double>(), b->notes()["authors_ratio"].get<double>());
}

// Full rank keeps everything: through the column Gram (T ≥ columns) and the token Gram when
// T < columns, where the effective rank is min(r, T, columns) and is recorded.
TEST(LowRank, FullRankIsLossless) {
  const CacheShape tall{4, 2, 2, 16, 300, 0, 0};   // group of 2: 64 columns, T = 300
  const CacheShape wide{4, 2, 2, 16, 40, 0, 0};    // T = 40 < 64 columns
  for (const auto& shape : {tall, wide}) {
    const auto cache = testing::random_cache(shape, 11);
    for (const char* prec : {"f32", "f64"}) {
      auto rep = make_low_rank(xkv(fmt::format("g=2,rk=64,rv=64,precision={}", prec)))->compress(ctx_of(cache));
      for (Part part : {Part::key, Part::value}) {
        const MatrixXd x = group_matrix(cache, {2, 3}, part);
        EXPECT_LT((x - rebuilt_group(*rep, shape, {2, 3}, part)).norm(), 1e-5 * x.norm())
            << "T=" << shape.tokens << " " << prec;
      }
      const auto notes = rep->notes();
      const auto& g = notes["groups"][1]["value"];
      EXPECT_EQ(g["effective_rank"].get<int>(), std::min<int>(64, shape.tokens));
      EXPECT_EQ(g["route"].get<std::string>(), std::string(shape.tokens >= 64 ? "gram-" : "token-gram-") + prec);
      EXPECT_LT(g["predicted_rel_error"].get<double>(), 1e-3);  // f32 Gram: √(u·cond-ish) floor
      // A is [T, r_eff]: what is stored follows the effective rank.
      for (auto* t : rep->stored())
        if (t->name == "group0/key/A") {
          EXPECT_EQ(t->shape, (core::Shape{shape.tokens, std::min<std::int64_t>(64, shape.tokens)}));
        }
    }
  }
}

// Two solves in flight (two backend threads) against one at a time, on both exact routes (token
// Gram at T = 40 < 64 columns, column Gram at T = 100): every layer's factors stay its own,
// through a full batch and an odd one (part=key: three solves), each rebuild equal to gesdd's
// truncation of that layer's own matrix (layers with different planted spectra, so a swapped
// group would fail by far more than the 1e-5 floor).
TEST(LowRank, SolvesInFlightKeepEachGroupsFactors) {
  const int H = 4, D = 16, N = H * D, r = 10;
  const int threads = be().threads();
  for (const int T : {40, 100}) {
  std::vector<MatrixXd> keys;
  for (int l = 0; l < 3; ++l)
    keys.push_back(linalg::testing::matrix_with_spectrum(T, N, linalg::testing::geometric_spectrum(std::min(T, N), 10.0 * (l + 1), 0.01), 20 + l));
  const auto cache = cache_of(keys, H, D);
  for (const char* part : {"key", "both"})
    for (int t : {1, 2}) {
      SCOPED_TRACE(fmt::format("part={} threads={}", part, t));
      be().set_threads(t);
      auto rep = make_low_rank(svd(fmt::format("rk={},rv={},part={}", r, r, part)))->compress(ctx_of(cache));
      be().set_threads(threads);
      for (int l = 0; l < 3; ++l)
        for (Part p : {Part::key, Part::value}) {
          if (p == Part::value && std::string(part) == "key") continue;
          const MatrixXd x = group_matrix(cache, {l}, p);
          EXPECT_LT((rebuilt_group(*rep, cache.shape(), {l}, p) - gesdd_truncation(x, r)).norm(), 1e-5 * x.norm())
              << "T=" << T << " layer " << l;
        }
    }
  }
}

// A spectrum falling to 1e-6: the f32 Gram cannot see σ below ~√u_f32·σ₁ ≈ 2.4e-4·σ₁, so its
// basis for the tail is noise; the f64 Gram is optimal (docs/performance.md §4). Measured ratios to the
// optimum: f64 1.0000, f32 1.97 (thresholds leave wide margin on both sides).
TEST(LowRank, DoublePrecisionBeatsSinglePrecisionOnIllConditionedSpectrum) {
  const int T = 2000, H = 4, D = 16, N = H * D, r = 40;
  VectorXd sigma = linalg::testing::geometric_spectrum(N, 1.0, 1e-6);
  const auto cache = cache_of({linalg::testing::matrix_with_spectrum(T, N, sigma, 17)}, H, D);
  const MatrixXd x = group_matrix(cache, {0}, Part::key);
  const double optimum = gesdd_tail(x, r);
  auto err = [&](const char* prec) {
    auto rep = make_low_rank(svd(fmt::format("rk={},precision={}", r, prec)))->compress(ctx_of(cache));
    return (x - rebuilt_group(*rep, cache.shape(), {0}, Part::key)).norm() / optimum;
  };
  const double e64 = err("f64"), e32 = err("f32");
  RecordProperty("f64_over_optimum", std::to_string(e64));
  RecordProperty("f32_over_optimum", std::to_string(e32));
  EXPECT_LT(e64, 1.01);
  EXPECT_GT(e32, 1.2);
}

// tf32 / bf16 (the Gram of inputs rounded as tensor cores round them) on a moderate spectrum
// (σ_r/σ₁ ≈ 0.4): the Gram's entries move by ≲ 2·u_in relative (u_in = 2⁻¹¹ / 2⁻⁸), the basis stays
// within 1e-6 / 1e-4 of Eckart–Young (measured: 1e-9 / 6e-8), and the route says which Gram it was.
TEST(LowRank, TensorCorePrecisionsStayNearTheOptimumAndSayTheirRoute) {
  const int T = 1500, H = 4, D = 16, N = H * D, r = 12;
  VectorXd sigma = linalg::testing::geometric_spectrum(N, 50.0, 0.01);
  const auto cache = cache_of({linalg::testing::matrix_with_spectrum(T, N, sigma, 23)}, H, D);
  const MatrixXd x = group_matrix(cache, {0}, Part::key);
  const double optimum = gesdd_tail(x, r);
  // The error over the optimum is second order in the basis' angle; the eigenvalues (and so
  // the predicted error) move at first order, which shows the inputs really were rounded.
  struct Result {
    double over_optimum, predicted;
  };
  auto run = [&](const char* prec) {
    auto rep = make_low_rank(svd(fmt::format("rk={},precision={}", r, prec)))->compress(ctx_of(cache));
    EXPECT_EQ(rep->notes()["groups"][0]["key"]["route"], std::string("gram-") + prec);
    EXPECT_EQ(rep->notes()["precision"], prec);
    return Result{(x - rebuilt_group(*rep, cache.shape(), {0}, Part::key)).norm() / optimum,
                  rep->notes()["groups"][0]["key"]["predicted_rel_error"].get<double>()};
  };
  const Result e64 = run("f64"), tf32 = run("tf32"), bf16 = run("bf16");
  EXPECT_LT(e64.over_optimum, 1 + 1e-9);
  EXPECT_LT(tf32.over_optimum, 1 + 1e-6);
  EXPECT_LT(bf16.over_optimum, 1 + 1e-4);
  const double d_tf32 = std::abs(tf32.predicted / e64.predicted - 1), d_bf16 = std::abs(bf16.predicted / e64.predicted - 1);
  std::printf("predicted error vs f64: tf32 %.2e, bf16 %.2e relative\n", d_tf32, d_bf16);
  EXPECT_GT(d_tf32, 1e-6);
  EXPECT_GT(d_bf16, d_tf32);
  EXPECT_LT(d_bf16, 0.05);
}

// HMT with p = 10, q = 2 on a fast-decaying spectrum is within 2 % of Eckart–Young (docs/performance.md §5:
// HMT's bound shrinks like (σ_{r+p}/σ_r)^(2q+1)); deterministic for a seed, different across seeds.
TEST(LowRank, RandomizedIsNearOptimalAndDeterministic) {
  const int T = 1500, H = 8, D = 16, N = H * D, r = 10;
  VectorXd sigma = linalg::testing::geometric_spectrum(N, 10.0, 1e-4);
  const auto cache = cache_of({linalg::testing::matrix_with_spectrum(T, N, sigma, 23)}, H, D);
  const MatrixXd x = group_matrix(cache, {0}, Part::key);
  const double optimum = gesdd_tail(x, r);
  auto run = [&](int seed) {
    return make_low_rank(svd(fmt::format("rk={},rv={},solver=randomized,seed={}", r, r, seed)))->compress(ctx_of(cache));
  };
  auto a = run(1), b = run(1), c = run(2);
  const MatrixXd xa = rebuilt_group(*a, cache.shape(), {0}, Part::key);
  const double err = (x - xa).norm();
  EXPECT_LE(err, 1.02 * optimum);
  EXPECT_GE(err, optimum * (1 - 1e-6));  // nobody beats Eckart–Young
  EXPECT_EQ(a->reconstruct(0).key.data, b->reconstruct(0).key.data);
  EXPECT_NE(a->stored()[0]->values, c->stored()[0]->values);
  EXPECT_LE((x - rebuilt_group(*c, cache.shape(), {0}, Part::key)).norm(), 1.02 * optimum);
  // The randomized route's predicted error is exact for its stored basis.
  EXPECT_NEAR(a->notes()["groups"][0]["key"]["predicted_rel_error"].get<double>(), err / x.norm(), 1e-3 * err / x.norm());
  EXPECT_EQ(a->notes()["groups"][0]["key"]["route"], "randomized-f64");
  EXPECT_EQ(c->notes()["seed"].get<int>(), 2);
}

// A counting cache source: how often each (layer, part) is read.
class CountingCache final : public CacheSource {
 public:
  explicit CountingCache(const CacheSource& base) : base_(base), reads_(static_cast<std::size_t>(base.shape().layers) * 2) {}
  const CacheShape& shape() const override { return base_.shape(); }
  FloatTensor layer(int l, Part p) const override {
    {
      const std::lock_guard lock(mutex_);  // layer() runs on several threads at once
      ++reads_[static_cast<std::size_t>(l) * 2 + (p == Part::key ? 0 : 1)];
    }
    return base_.layer(l, p);
  }
  FloatTensor queries(int l) const override { return base_.queries(l); }
  const std::vector<std::int64_t>& positions() const override { return base_.positions(); }
  using CacheSource::rope;
  const core::Rope& rope(int layer) const override { return base_.rope(layer); }
  int window(int layer) const override { return base_.window(layer); }
  std::string describe() const override { return "counting"; }
  const std::vector<int>& reads() const { return reads_; }

 private:
  const CacheSource& base_;
  mutable std::mutex mutex_;
  mutable std::vector<int> reads_;
};

// Σ_j |A_tj|·|B_jn| of layer l's rebuild A_g·B_l (g = l / G), [T, N] row-major: the scale of the
// products a rebuilt entry sums, which may cancel to far less.
RowMatrixXd abs_product(Compressed& rep, int l, int G, Part part) {
  const StoredTensor *a = nullptr, *b = nullptr;
  for (const auto* t : rep.stored()) {
    if (t->name == low_rank_a_name(static_cast<std::size_t>(l / G), part)) a = t;
    if (t->name == low_rank_b_name(l, part)) b = t;
  }
  EXPECT_TRUE(a && b);
  const auto map = [](const StoredTensor& t) {
    return Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(t.values.data(), t.shape.at(0), t.shape.at(1))
        .cast<double>()
        .cwiseAbs()
        .eval();
  };
  return map(*a) * map(*b);
}

// A sweep decomposes once at the largest rank and slices: the same bytes, notes and
// reconstructions as compressing each spec alone, while reading every layer once. The factors
// agree to f64 rounding, but both are stored in fp16 (stored_bytes packs them), where two values
// that close may still round to neighbouring fp16 numbers: one ulp, ≤ 2⁻¹⁰ of the value, in A
// or B moves a rebuilt entry by ≤ 2⁻⁹·Σ_j |A_tj||B_jn| (plus f32 sums, the 1e-6 floor).
TEST(LowRank, SweepEqualsOneByOneAndReadsEachLayerOnce) {
  auto cfg = testing::small_synth_config();
  cfg.layers = 6;
  const auto base = testing::synthetic_cache(cfg);
  const CountingCache cache(base);
  std::vector<StageSpec> variants;
  for (int r : {2, 5, 9, 16}) variants.push_back(xkv(fmt::format("g=4,rk={}", r)));
  variants.push_back(xkv("g=4,rk=3,rv=40"));
  const auto swept = compress_low_rank_sweep(ctx_of(cache), variants);
  for (int v : cache.reads()) EXPECT_EQ(v, 1);
  ASSERT_EQ(swept.size(), variants.size());
  for (std::size_t i = 0; i < variants.size(); ++i) {
    auto alone = make_low_rank(variants[i])->compress(ctx_of(base));
    EXPECT_EQ(testing::stored_bytes(*swept[i]), testing::stored_bytes(*alone)) << variants[i].to_string();
    EXPECT_EQ(testing::stored_bytes(*swept[i]), low_rank_accounting(base.shape(), variants[i]).stored_bytes);
    for (int l = 0; l < cfg.layers; ++l) {
      const auto s = swept[i]->reconstruct(l), o = alone->reconstruct(l);
      const RowMatrixXd key_scale = abs_product(*alone, l, 4, Part::key), value_scale = abs_product(*alone, l, 4, Part::value);
      for (std::size_t j = 0; j < s.key.data.size(); ++j) {
        ASSERT_NEAR(s.key.data[j], o.key.data[j], std::ldexp(key_scale.data()[j], -9) + 1e-6) << variants[i].to_string();
        ASSERT_NEAR(s.value.data[j], o.value.data[j], std::ldexp(value_scale.data()[j], -9) + 1e-6);
      }
    }
    const auto ns = swept[i]->notes(), no = alone->notes();
    EXPECT_EQ(ns["groups"].size(), no["groups"].size());
    for (std::size_t g = 0; g < ns["groups"].size(); ++g)
      EXPECT_NEAR(ns["groups"][g]["value"]["predicted_rel_error"].get<double>(),
                  no["groups"][g]["value"]["predicted_rel_error"].get<double>(), 1e-6);
    EXPECT_EQ(ns.dump().size() > 0, true);
  }
  // A randomized sketch depends on its width r + p, so randomized variants are compressed one by
  // one: each equals its spec compressed alone, bit for bit.
  const std::vector<StageSpec> rnd{xkv("g=2,rk=3,solver=randomized"), xkv("g=2,rk=9,solver=randomized")};
  const auto rs = compress_low_rank_sweep(ctx_of(base), rnd);
  for (std::size_t i = 0; i < rnd.size(); ++i)
    EXPECT_EQ(rs[i]->reconstruct(1).key.data, make_low_rank(rnd[i])->compress(ctx_of(base))->reconstruct(1).key.data);
  // Variants differing in more than ranks fall back to one-by-one and still match.
  const std::vector<StageSpec> mixed{xkv("g=2,rk=4"), xkv("g=3,rk=4")};
  const auto m = compress_low_rank_sweep(ctx_of(base), mixed);
  EXPECT_EQ(m[1]->notes()["groups"][0]["layers"].size(), 3u);
  EXPECT_EQ(testing::stored_bytes(*m[0]), low_rank_accounting(base.shape(), mixed[0]).stored_bytes);
}

std::set<std::string> names(Compressed& rep) {
  std::set<std::string> out;
  for (auto* t : rep.stored()) out.insert(t->name);
  return out;
}

// Custom groups and start/end: which layers are grouped, which stay exact fp16, what is
// stored with which quantizer layout, and that the group's factorization is the one of the
// concatenated matrix (error = gesdd tail of the group).
TEST(LowRank, CustomGroupsAndStartEnd) {
  const CacheShape shape{8, 2, 2, 8, 120, 0, 0};
  const auto cache = testing::random_cache(shape, 9, false);
  auto rep = make_low_rank(xkv("groups=0-2/5-6,rk=6,rv=10"))->compress(ctx_of(cache));
  EXPECT_EQ(low_rank_groups(xkv("groups=0-2/5-6"), 8), (std::vector<std::vector<int>>{{0, 1, 2}, {5, 6}}));
  const auto n = names(*rep);
  for (const char* want : {"group0/key/A", "group0/value/A", "group1/key/A", "layer0/key/B", "layer2/value/B",
                           "layer6/key/B", "layer3/key", "layer3/value", "layer4/key", "layer7/value"})
    EXPECT_TRUE(n.count(want)) << want;
  EXPECT_FALSE(n.count("layer3/key/B"));
  EXPECT_FALSE(n.count("layer0/key"));
  for (auto* t : rep->stored()) {
    const bool is_a = t->name.ends_with("/A"), is_b = t->name.ends_with("/B");
    const bool dense_key = !is_a && !is_b && t->name.ends_with("/key");
    EXPECT_EQ(t->layout, dense_key ? QuantLayout::per_channel : QuantLayout::per_token) << t->name;
    EXPECT_EQ(t->token_rows, !is_b) << t->name;
    StoredTensor stored = *t;
    pack_fp16_storage({&stored});
    EXPECT_EQ(stored.bytes(), 2 * static_cast<std::int64_t>(t->values.size())) << t->name;
  }
  for (int l : {3, 4, 7}) {
    EXPECT_EQ(rep->reconstruct(l).key.data, cache.layer(l, Part::key).data) << l;
    EXPECT_EQ(rep->reconstruct(l).value.data, cache.layer(l, Part::value).data) << l;
  }
  const MatrixXd x = group_matrix(cache, {0, 1, 2}, Part::value);
  EXPECT_NEAR((x - rebuilt_group(*rep, shape, {0, 1, 2}, Part::value)).norm(), gesdd_tail(x, 10), 1e-5 * x.norm());
  EXPECT_EQ(testing::stored_bytes(*rep), low_rank_accounting(shape, xkv("groups=0-2/5-6,rk=6,rv=10")).stored_bytes);

  // start/end: groups [2,3,4], [5] (cut at end); layers 0, 1, 6, 7 uncompressed.
  const auto se = xkv("g=3,start=2,end=5,rk=4");
  EXPECT_EQ(low_rank_groups(se, 8), (std::vector<std::vector<int>>{{2, 3, 4}, {5}}));
  auto rs = make_low_rank(se)->compress(ctx_of(cache));
  EXPECT_EQ(rs->notes()["uncompressed_layers"], nlohmann::json({0, 1, 6, 7}));
  EXPECT_EQ(rs->reconstruct(6).key.data, cache.layer(6, Part::key).data);
  EXPECT_NE(rs->reconstruct(5).key.data, cache.layer(5, Part::key).data);
  EXPECT_EQ(testing::stored_bytes(*rs), low_rank_accounting(shape, se).stored_bytes);
  // Hand count, 2 bytes a value: keys rank 4, values rank 6 (1.5·4), A [120, r] + B [r, columns]
  // for group0 (48 columns) and group1 (16), plus 4 dense layers · 2 parts · 120·16.
  EXPECT_EQ(testing::stored_bytes(*rs), 2 * ((120 * 4 + 4 * 48) + (120 * 4 + 4 * 16) + (120 * 6 + 6 * 48) + (120 * 6 + 6 * 16) +
                              4 * 2 * 120 * 16));
}

// part=key leaves the values exact (and stored dense); the keys are compressed.
TEST(LowRank, PartKeyOnlyKeepsValuesExact) {
  const CacheShape shape{4, 2, 2, 8, 100, 0, 0};
  const auto cache = testing::random_cache(shape, 4);
  auto rep = make_low_rank(xkv("g=2,rk=5,part=key"))->compress(ctx_of(cache));
  for (int l = 0; l < 4; ++l) {
    EXPECT_EQ(rep->reconstruct(l).value.data, cache.layer(l, Part::value).data);
    EXPECT_NE(rep->reconstruct(l).key.data, cache.layer(l, Part::key).data);
  }
  EXPECT_FALSE(rep->notes()["groups"][0].contains("value"));
  EXPECT_EQ(testing::stored_bytes(*rep), low_rank_accounting(shape, xkv("g=2,rk=5,part=key")).stored_bytes);
}

// Reconstruction reads only the stored values (a chained quantizer edits them in place):
// zeroing a group's A zeroes exactly that group's layers of that part.
TEST(LowRank, ReconstructReadsOnlyStoredValues) {
  const CacheShape shape{4, 2, 2, 8, 64, 0, 0};
  const auto cache = testing::random_cache(shape, 8);
  auto rep = make_low_rank(xkv("g=2,rk=4"))->compress(ctx_of(cache));
  const auto before2 = rep->reconstruct(2).key.data;
  for (auto* t : rep->stored())
    if (t->name == "group0/key/A") std::fill(t->values.begin(), t->values.end(), 0.f);
  for (int l : {0, 1}) {
    const auto kv = rep->reconstruct(l);
    EXPECT_TRUE(std::all_of(kv.key.data.begin(), kv.key.data.end(), [](float v) { return v == 0.f; })) << l;
    EXPECT_FALSE(std::all_of(kv.value.data.begin(), kv.value.data.end(), [](float v) { return v == 0.f; })) << l;
  }
  EXPECT_EQ(rep->reconstruct(2).key.data, before2);
}

void expect_error(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one naming " << needle;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(LowRank, BadSpecsNameTheKey) {
  expect_error([] { xkv("rk=0"); }, "'rk'");
  expect_error([] { svd("rk=0"); }, "'rk'");
  expect_error([] { xkv("rk=8,rv=0"); }, "'rv'");
  expect_error([] { xkv("g=0"); }, "'g'");
  expect_error([] { xkv("groups=0-3/2-5"); }, "'groups'");    // overlapping
  expect_error([] { xkv("groups=0-3/3"); }, "layer 3 is in two groups");
  expect_error([] { xkv("groups=0-x"); }, "'groups'");
  expect_error([] { xkv("groups=4-2"); }, "'groups'");
  // Found by fuzz/spec_fuzz (fuzz/crashes/spec/): huge layer ranges are refused up front rather
  // than enumerated (this one took minutes), and INT_MAX cannot overflow the layer loop.
  expect_error([] { xkv("g=4,rk=314,start=0,end=-1,groups=0-75555555"); }, "layer 75555555 is above 65535");
  expect_error([] { xkv("groups=2147483647"); }, "is above 65535");
  EXPECT_EQ(low_rank_groups(xkv("groups=65535"), 65536), (std::vector<std::vector<int>>{{65535}}));
  expect_error([] { xkv("start=3,end=1"); }, "'end'");
  expect_error([] { xkv("solver=lanczos"); }, "'solver'");
  const CacheShape shape{4, 2, 2, 8, 32, 0, 0};
  const auto cache = testing::random_cache(shape, 1);
  expect_error([&] { make_low_rank(xkv("groups=0-1/2-4"))->compress(ctx_of(cache)); }, "'groups': layer 4");
  expect_error([&] { make_low_rank(xkv("end=4"))->compress(ctx_of(cache)); }, "'end'");
  expect_error([&] { make_low_rank(xkv("start=4"))->compress(ctx_of(cache)); }, "'start'");
  expect_error([&] { low_rank_accounting(shape, xkv("groups=7")); }, "'groups'");
  // A rank beyond a group's columns (G·H·D = 2·16 here) is no rank X_g has: an error, not a clamp.
  expect_error([&] { make_low_rank(xkv("g=2,rk=33"))->compress(ctx_of(cache)); }, "'rk' = 33 exceeds the 32 columns");
  expect_error([&] { make_low_rank(svd("rk=8,rv=17"))->compress(ctx_of(cache)); }, "'rv' = 17 exceeds the 16 columns");
  expect_error([&] { low_rank_accounting(shape, svd("rk=1000000")); }, "'rk'");
  EXPECT_NO_THROW(make_low_rank(xkv("g=2,rk=32,part=key"))->compress(ctx_of(cache)));  // full rank, values left alone
  EXPECT_NO_THROW(make_low_rank(svd("rk=8,rv=1000,part=key"))->compress(ctx_of(cache)));  // rv unused
  EXPECT_NO_THROW(make_low_rank(xkv("g=3,rk=40,rv=40"))->compress(ctx_of(cache)));  // 48 columns; the last group of 1 clamps
}

TEST(LowRank, DerivedValueRankAndCanonicalRoundTrip) {
  EXPECT_EQ(svd("").get_int("rk"), 96);
  EXPECT_EQ(svd("").get_int("rv"), 144);
  EXPECT_EQ(xkv("").get_int("rv"), 576);
  EXPECT_EQ(xkv("rk=101").get_int("rv"), 152);  // round(151.5) away from zero
  EXPECT_EQ(xkv("rk=100,rv=7").get_int("rv"), 7);
  const auto s = xkv("g=2,rk=192,groups=0-3/8-9");
  EXPECT_EQ(s.to_string().rfind("xkv:g=2,rk=192,rv=288,start=0,end=-1,groups=0-3/8-9,part=both", 0), 0u) << s.to_string();
  const auto body = s.to_string().substr(4);
  EXPECT_EQ(xkv(body).to_string(), s.to_string());
  EXPECT_EQ(xkv(xkv("").to_string().substr(4)).to_string(), xkv("").to_string());  // empty groups round-trips
}

// docs/methods/svd-xkv.md §6: Llama-3.1-8B shapes, T = 65536, group ranks (no scaling by G). When G divides
// L the stored-bytes ratio is the same number.
TEST(LowRank, AuthorsRatioMatchesPublishedNumbers) {
  const CacheShape llama{32, 8, 32, 128, 65536, 0, 0};
  struct Row {
    int g, rk, rv;
    double ratio;
  };
  for (const auto& row : {Row{1, 96, 144, 8.40}, Row{2, 192, 288, 8.27}, Row{4, 384, 576, 8.03},
                          Row{8, 768, 1152, 7.59}, Row{1, 128, 192, 6.30}, Row{4, 512, 768, 6.02}}) {
    const auto acc = low_rank_accounting(llama, xkv(fmt::format("g={},rk={},rv={}", row.g, row.rk, row.rv)));
    EXPECT_NEAR(std::round(acc.authors_ratio * 100) / 100, row.ratio, 1e-9) << "G=" << row.g << " " << acc.authors_ratio;
    EXPECT_NEAR(acc.stored_ratio, acc.authors_ratio, 1e-12 * acc.authors_ratio) << "G=" << row.g;
  }
  EXPECT_NEAR(std::round(low_rank_accounting(llama, svd("")).authors_ratio * 100) / 100, 8.40, 1e-9);
  // The closed form 2·H·T·D / ((T/G + H·D)·(r_k + r_v)) for G = 4 (docs/methods/svd-xkv.md §6).
  EXPECT_NEAR(low_rank_accounting(llama, xkv("")).authors_ratio, 2.0 * 1024 * 65536 / ((65536 / 4 + 1024) * 960.0), 1e-12);
  // G not dividing L: ceil(L/G) groups; the last (layer 32-… of 30) is short, the ratio differs.
  const CacheShape thirty{30, 8, 32, 128, 65536, 0, 0};
  const auto acc = low_rank_accounting(thirty, xkv("g=4,rk=384,rv=576"));
  EXPECT_NEAR(acc.authors_ratio, 2.0 * 30 * 1024 * 65536 / (8 * 65536 * 960.0 + 30 * 1024 * 960.0), 1e-12);
  // part=key: values count in full, as the authors' rank_v = 0.
  const auto key_only = low_rank_accounting(llama, xkv("g=4,rk=384,part=key"));
  EXPECT_NEAR(key_only.authors_ratio, 2.0 * 32 * 1024 * 65536 / (8 * 65536 * 384.0 + 32 * 1024 * 384.0 + 32 * 65536 * 1024.0),
              1e-12);
}

}  // namespace
}  // namespace kvlab::compressors
