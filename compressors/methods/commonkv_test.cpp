// commonkv on a tiny model built here: random W_k/W_v (+ biases) written with write_safetensors,
// random attn_in, and dumped keys/values = attn_in·Wᵀ + b, exactly as the model computes them.
// Oracles are independent of the method's code path: the weights themselves (full rank is
// lossless), an Eigen JacobiSVD of the stacked weights (rank truncation, similarities), the
// spec's counting rule, and the byte formula of docs/methods/commonkv.md §5.
// Tolerance: 1e-4 relative Frobenius (f32 latents and gemms on O(1) data; observed ~1e-6).
#include "compressors/methods/commonkv.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <Eigen/Dense>
#include <fmt/format.h>
#include <filesystem>
#include <random>
#include <set>

#include "core/error.h"
#include "core/safetensors.h"
#include "linalg/backend.h"

namespace kvlab::compressors {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using MatrixXd = Eigen::MatrixXd;

constexpr int kHeads = 2, kHeadDim = 4, kWidth = kHeads * kHeadDim;  // N = H_kv·D = 8

struct TinyModel {
  int layers = 5, d_model = 24;
  std::int64_t tokens = 64;
  bool biases = true;
  std::vector<MatrixXd> wk, wv, h;  // [N, d_model], [N, d_model], [T, d_model] per layer
  std::vector<Eigen::VectorXd> bk, bv;
  fs::path dir;

  // Random weights and inputs; layers listed in `copies` as {l, src} repeat layer src exactly.
  void build(unsigned seed, const std::vector<std::pair<int, int>>& copies = {}) {
    std::mt19937 rng(seed);
    std::normal_distribution<double> normal;
    auto random = [&](Eigen::Index r, Eigen::Index c) {
      MatrixXd m(r, c);
      for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = normal(rng);
      return m;
    };
    for (int l = 0; l < layers; ++l) {
      // Rounded to f32 so the checkpoint (F32) and the oracle hold the same numbers.
      wk.push_back(random(kWidth, d_model).cast<float>().cast<double>() / std::sqrt(d_model));
      wv.push_back(random(kWidth, d_model).cast<float>().cast<double>() / std::sqrt(d_model));
      bk.push_back(biases ? Eigen::VectorXd(random(kWidth, 1).cast<float>().cast<double>()) : Eigen::VectorXd::Zero(kWidth));
      bv.push_back(biases ? Eigen::VectorXd(random(kWidth, 1).cast<float>().cast<double>()) : Eigen::VectorXd::Zero(kWidth));
      h.push_back(random(tokens, d_model).cast<float>().cast<double>());
    }
    for (auto [l, src] : copies) {
      wk[l] = wk[src], wv[l] = wv[src], bk[l] = bk[src], bv[l] = bv[src], h[l] = h[src];
    }
  }

  static std::vector<float> floats(const MatrixXd& m) {  // row-major f32
    Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> r = m.cast<float>();
    return {r.data(), r.data() + r.size()};
  }

  void write(const fs::path& directory, int skip_layer = -1) {
    dir = directory;
    std::map<std::string, core::TensorToWrite> t;
    for (int l = 0; l < layers; ++l) {
      if (l == skip_layer) continue;
      const auto p = fmt::format("model.layers.{}.self_attn.", l);
      t[p + "k_proj.weight"] = {{kWidth, d_model}, floats(wk[l]), core::DType::f32};
      t[p + "v_proj.weight"] = {{kWidth, d_model}, floats(wv[l]), core::DType::f32};
      if (biases) {
        t[p + "k_proj.bias"] = {{kWidth}, floats(bk[l]), core::DType::f32};
        t[p + "v_proj.bias"] = {{kWidth}, floats(bv[l]), core::DType::f32};
      }
      t[p + "q_proj.weight"] = {{4, d_model}, std::vector<float>(4 * d_model, 0.f), core::DType::bf16};  // ignored
    }
    core::write_safetensors(directory / "model.safetensors", t);
  }

  // The dumped keys/values [T, N]: h·Wᵀ + b.
  MatrixXd keys(int l) const { return (h[l] * wk[l].transpose()).rowwise() + bk[l].transpose(); }
  MatrixXd values(int l) const { return (h[l] * wv[l].transpose()).rowwise() + bv[l].transpose(); }

  InMemoryCache cache(bool with_attn_in = true) const {
    CacheShape shape{layers, kHeads, 2 * kHeads, kHeadDim, tokens, 0, with_attn_in ? d_model : 0};
    std::vector<FloatTensor> k, v, q, a;
    auto tensor = [](const MatrixXd& m, core::Shape s) {
      FloatTensor t(std::move(s));
      t.data = floats(m);
      return t;
    };
    for (int l = 0; l < layers; ++l) {
      k.push_back(tensor(keys(l), {tokens, kHeads, kHeadDim}));
      v.push_back(tensor(values(l), {tokens, kHeads, kHeadDim}));
      q.push_back(FloatTensor({0, 2 * kHeads, kHeadDim}));
      if (with_attn_in) a.push_back(tensor(h[l], {tokens, d_model}));
    }
    // A real RoPE: leftover dense layers store post-RoPE keys and must un-rotate them.
    return InMemoryCache(shape, std::move(k), std::move(v), std::move(q), {}, core::Rope::standard(kHeadDim, 10000.0),
                         std::move(a));
  }

  // [W_k^{l1};…;W_k^{lG};W_v^{l1};…;W_v^{lG}] of the group starting at `first`.
  MatrixXd stacked(int first, int g) const {
    MatrixXd w(2 * g * kWidth, d_model);
    for (int i = 0; i < g; ++i) {
      w.middleRows(i * kWidth, kWidth) = wk[first + i];
      w.middleRows((g + i) * kWidth, kWidth) = wv[first + i];
    }
    return w;
  }
};

MatrixXd as_matrix(const FloatTensor& t) {  // [T, H, D] → [T, H·D]
  Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> m(t.data.data(), t.shape[0],
                                                                                          t.data.size() / t.shape[0]);
  return m.cast<double>();
}

double rel_error(const MatrixXd& got, const MatrixXd& want) { return (got - want).norm() / want.norm(); }

class CommonKVTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           fmt::format("kvlab_commonkv_{}_{}", ::testing::UnitTest::GetInstance()->current_test_info()->name(), ::getpid());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  static std::unique_ptr<Compressed> run(const std::string& params, const CacheSource& cache,
                                         const core::Checkpoint* ckpt) {
    const auto stage = make_commonkv(parse_stage(commonkv_method(), params));
    const CompressContext ctx{cache, linalg::cpu_backend(), ckpt};
    return stage->compress(ctx);
  }

  static StoredTensor* find(Compressed& c, const std::string& name) {
    for (auto* t : c.stored())
      if (t->name == name) return t;
    return nullptr;
  }

  fs::path dir_;
};

TEST(CommonKVSpec, DefaultsAndCanonicalForm) {
  const auto spec = parse_stage(commonkv_method(), "");
  EXPECT_EQ(spec.to_string(), "commonkv:g=4,rank=0,keep=0.4,sinks=4,recent=128,weights=uniform,pair=first_last,leftover=dense");
  EXPECT_THROW(parse_stage(commonkv_method(), "leftover=merge"), Error);
  EXPECT_THROW(parse_stage(commonkv_method(), "keep=1.5"), Error);
  EXPECT_THROW(parse_stage(commonkv_method(), "weights=llama"), Error);
}

// rank = rank of the stacked weights and keep = 1 (nothing merged): W = D·P exactly, so every
// layer's keys and values come back (incl. the dense leftover layer 4 through its RoPE round trip).
TEST_F(CommonKVTest, FullRankWithoutMergingReproducesTheCache) {
  for (bool biases : {true, false}) {
    SCOPED_TRACE(biases ? "with biases (Qwen2)" : "no biases (Llama)");
    TinyModel model;
    model.biases = biases;
    model.build(1);
    fs::create_directories(dir_ / std::to_string(biases));
    model.write(dir_ / std::to_string(biases));
    const core::Checkpoint ckpt(model.dir);
    const auto cache = model.cache();
    // g=2 over 5 layers: groups {0,1}, {2,3}; stacked 32 × 24 has rank 24. rank=1000 is capped to 24.
    for (const char* params : {"g=2,rank=24,keep=1", "g=2,rank=1000,keep=1"}) {
      SCOPED_TRACE(params);
      auto c = run(params, cache, &ckpt);
      for (int l = 0; l < model.layers; ++l) {
        const auto kv = c->reconstruct(l);
        EXPECT_TRUE(kv.kept.empty());
        EXPECT_LT(rel_error(as_matrix(kv.key), model.keys(l)), 1e-4) << "layer " << l;
        EXPECT_LT(rel_error(as_matrix(kv.value), model.values(l)), 1e-4) << "layer " << l;
      }
      // As a chain stores it: every fp16 tensor packed (unit roundoff 4.9e-4 per factor); the byte
      // figures in the notes count the packed form.
      pack_fp16_storage(c->stored());
      const auto notes = c->notes();
      EXPECT_EQ(notes["merged_pairs"], 0);
      EXPECT_EQ(notes["groups"][0]["rank"], 24);
      EXPECT_EQ(notes["dense_layers"], nlohmann::json::array({4}));
      ASSERT_NE(find(*c, "layer4/key"), nullptr);
      EXPECT_EQ(find(*c, "layer4/key")->shape, (core::Shape{64, kWidth}));
      EXPECT_EQ(find(*c, "layer0/key_bias") != nullptr, biases);
      for (int l = 0; l < model.layers; ++l) {
        const auto kv = c->reconstruct(l);
        EXPECT_LT(rel_error(as_matrix(kv.key), model.keys(l)), 2e-3) << "layer " << l;
        EXPECT_LT(rel_error(as_matrix(kv.value), model.values(l)), 2e-3) << "layer " << l;
      }
    }
  }
}

// rank < full: the keys equal h·W_{k,r}ᵀ + b with W_r the rank-r truncation of the stacked
// weights, computed here by Eigen's JacobiSVD (not LAPACK's gesdd).
TEST_F(CommonKVTest, TruncatedRankEqualsWeightTruncation) {
  TinyModel model;
  model.build(2);
  model.write(dir_);
  const core::Checkpoint ckpt(dir_);
  const auto cache = model.cache();
  const int g = 2, r = 6;
  auto c = run("g=2,rank=6,keep=1", cache, &ckpt);
  for (int first : {0, 2}) {
    const MatrixXd w = model.stacked(first, g);
    Eigen::JacobiSVD<MatrixXd> svd(w, Eigen::ComputeThinU | Eigen::ComputeThinV);
    const MatrixXd wr = svd.matrixU().leftCols(r) * svd.singularValues().head(r).asDiagonal() *
                        svd.matrixV().leftCols(r).transpose();
    for (int i = 0; i < g; ++i) {
      const int l = first + i;
      const MatrixXd want_k = (model.h[l] * wr.middleRows(i * kWidth, kWidth).transpose()).rowwise() + model.bk[l].transpose();
      const MatrixXd want_v =
          (model.h[l] * wr.middleRows((g + i) * kWidth, kWidth).transpose()).rowwise() + model.bv[l].transpose();
      const auto kv = c->reconstruct(l);
      EXPECT_LT(rel_error(as_matrix(kv.key), want_k), 1e-4) << "layer " << l;
      EXPECT_LT(rel_error(as_matrix(kv.value), want_v), 1e-4) << "layer " << l;
      // The truncation really loses something (else the test would prove nothing).
      EXPECT_GT(rel_error(as_matrix(kv.key), model.keys(l)), 0.05);
    }
  }
  EXPECT_EQ(find(*c, "group0/P")->shape, (core::Shape{r, model.d_model}));
  EXPECT_EQ(find(*c, "layer3/D_value")->shape, (core::Shape{kWidth, r}));
  EXPECT_EQ(find(*c, "layer1/latent")->shape, (core::Shape{64, r}));
}

// Merging: the unmerged set is exactly (the int(keep·N) lowest similarities over all groups) ∪
// sinks ∪ recent, with similarities computed here from Eigen's SVD; unmerged tokens reproduce the
// cache, merged ones equal W_l·mean_i(h^{l_i}) + b (uniform weights, full rank).
TEST_F(CommonKVTest, MergeSetCountAndMergedValuesAreExact) {
  TinyModel model;
  model.build(3);
  model.write(dir_);
  const core::Checkpoint ckpt(dir_);
  const auto cache = model.cache();
  const int g = 2, groups = 2, sinks = 4, recent = 16, r = 24;
  const std::int64_t T = model.tokens;
  auto c = run("g=2,rank=24,keep=0.4,sinks=4,recent=16", cache, &ckpt);

  std::vector<std::pair<double, std::int64_t>> sim;  // (similarity, g·T + t)
  for (int gi = 0; gi < groups; ++gi) {
    Eigen::JacobiSVD<MatrixXd> svd(model.stacked(gi * g, g), Eigen::ComputeThinU | Eigen::ComputeThinV);
    const MatrixXd proj = svd.matrixV().leftCols(r) * svd.singularValues().head(r).cwiseSqrt().asDiagonal();
    const MatrixXd a = model.h[gi * g] * proj, b = model.h[gi * g + g - 1] * proj;
    for (std::int64_t t = 0; t < T; ++t)
      sim.emplace_back(a.row(t).dot(b.row(t)) / (a.row(t).norm() * b.row(t).norm()), gi * T + t);
  }
  std::sort(sim.begin(), sim.end());
  const std::int64_t budget = static_cast<std::int64_t>(0.4 * static_cast<double>(groups * T));  // 51
  ASSERT_EQ(budget, 51);
  ASSERT_GT(sim[budget].first - sim[budget - 1].first, 1e-5) << "near-tie at the budget boundary";
  std::set<std::int64_t> unmerged;
  for (std::int64_t i = 0; i < budget; ++i) unmerged.insert(sim[i].second);
  for (int gi = 0; gi < groups; ++gi)
    for (std::int64_t t = 0; t < T; ++t)
      if (t < sinks || t >= T - recent) unmerged.insert(gi * T + t);

  for (int gi = 0; gi < groups; ++gi) {
    std::int64_t u = 0;
    for (std::int64_t t = 0; t < T; ++t) u += unmerged.count(gi * T + t);
    EXPECT_EQ(find(*c, fmt::format("group{}/merged_latent", gi))->shape, (core::Shape{T - u, r}));
    const auto* index = find(*c, fmt::format("group{}/merged_index", gi));
    EXPECT_EQ(index->bytes(), 4 * (T - u));
    for (const std::int32_t t : index->unpack_indices()) EXPECT_FALSE(unmerged.count(gi * T + t)) << t;
    for (int i = 0; i < g; ++i) {
      const int l = gi * g + i;
      EXPECT_EQ(find(*c, fmt::format("layer{}/latent", l))->shape, (core::Shape{u, r}));
      const auto kv = c->reconstruct(l);
      const MatrixXd got = as_matrix(kv.key), gotv = as_matrix(kv.value);
      const MatrixXd mean_h = (model.h[gi * g] + model.h[gi * g + 1]) / 2;
      const MatrixXd merged_k = (mean_h * model.wk[l].transpose()).rowwise() + model.bk[l].transpose();
      const MatrixXd merged_v = (mean_h * model.wv[l].transpose()).rowwise() + model.bv[l].transpose();
      const MatrixXd exact_k = model.keys(l), exact_v = model.values(l);
      for (std::int64_t t = 0; t < T; ++t) {
        const bool keep = unmerged.count(gi * T + t) > 0;
        if (t < sinks || t >= T - recent) {
          ASSERT_TRUE(keep);  // sinks and recent are never merged
        }
        const auto& wk = keep ? exact_k : merged_k;
        const auto& wv = keep ? exact_v : merged_v;
        EXPECT_LT((got.row(t) - wk.row(t)).norm() / wk.row(t).norm(), 1e-4) << "layer " << l << " token " << t;
        EXPECT_LT((gotv.row(t) - wv.row(t)).norm() / wv.row(t).norm(), 1e-4) << "layer " << l << " token " << t;
      }
    }
  }
  pack_fp16_storage(c->stored());  // the notes count the packed form
  const auto notes = c->notes();
  EXPECT_EQ(notes["merged_pairs"].get<std::int64_t>(), groups * T - static_cast<std::int64_t>(unmerged.size()));
  EXPECT_EQ(notes["no_merge_budget"].get<std::int64_t>(), budget);
  EXPECT_GT(notes["merged_pairs"].get<std::int64_t>(), 0);
}

// Identical layers have identical latents (cosine 1), so merging everything is lossless, and
// stores one latent per group instead of one per layer.
TEST_F(CommonKVTest, IdenticalLayersMergeLosslessly) {
  TinyModel model;
  model.layers = 4;
  model.build(4, {{1, 0}, {3, 2}});
  model.write(dir_);
  const core::Checkpoint ckpt(dir_);
  const auto cache = model.cache();
  auto merged = run("g=2,rank=0,keep=0,sinks=0,recent=0", cache, &ckpt);
  auto unmerged = run("g=2,rank=0,keep=1", cache, &ckpt);
  pack_fp16_storage(merged->stored());  // as a chain stores both; the notes count the packed form
  pack_fp16_storage(unmerged->stored());
  EXPECT_DOUBLE_EQ(merged->notes()["merged_fraction"].get<double>(), 1.0);
  for (int l = 0; l < model.layers; ++l) {
    const auto a = merged->reconstruct(l), b = unmerged->reconstruct(l);
    EXPECT_LT(rel_error(as_matrix(a.key), as_matrix(b.key)), 1e-5) << "layer " << l;
    EXPECT_LT(rel_error(as_matrix(a.value), as_matrix(b.value)), 1e-5) << "layer " << l;
  }
  // rank 0 → H_kv·D = 8: latents 2 bytes · 8 · (2 layers · 64 unmerged) vs (64 merged) per group.
  EXPECT_EQ(unmerged->notes()["latent_bytes"].get<std::int64_t>(), 2 * (2 * 8 * 2 * 64));
  EXPECT_EQ(merged->notes()["latent_bytes"].get<std::int64_t>(), 2 * (2 * 8 * 64));
}

// Σ stored bytes by the formula of docs/methods/commonkv.md §5 plus what the formula leaves out:
// latents 2·r·(G·U_g + M_g), int32 indices 4·M_g, factors 2·(r·d_model + 2·G·N·r), biases
// 2·2·N per grouped layer, leftover layers 2·2·T·N.
TEST_F(CommonKVTest, BytesByFormula) {
  TinyModel model;
  model.build(5);
  model.write(dir_);
  const core::Checkpoint ckpt(dir_);
  const auto cache = model.cache();
  auto c = run("g=2,rank=5,keep=0.3,sinks=2,recent=8", cache, &ckpt);
  pack_fp16_storage(c->stored());
  const auto notes = c->notes();
  const std::int64_t r = 5, G = 2, N = kWidth, T = model.tokens, d = model.d_model;
  std::int64_t latent = 0, index = 0, merged = 0;
  for (const auto& g : notes["groups"]) {
    const std::int64_t M = g["merged_tokens"], U = g["unmerged_tokens"];
    EXPECT_EQ(M + U, T);
    EXPECT_EQ(g["rank"], r);
    latent += 2 * r * (G * U + M);
    index += 4 * M;
    merged += M;
  }
  const std::int64_t factors = 2 * 2 * (r * d + 2 * G * N * r) + 2 * 2 * N * 4;  // 2 groups; biases of 4 layers
  const std::int64_t dense = 2 * 2 * T * N;                                        // layer 4
  EXPECT_EQ(notes["latent_bytes"].get<std::int64_t>(), latent);
  EXPECT_EQ(notes["factor_bytes"].get<std::int64_t>(), factors);
  EXPECT_EQ(c->bytes(), latent + index + factors + dense);
  EXPECT_EQ(notes["bytes_without_factors"].get<std::int64_t>(), latent + index + dense);
  EXPECT_EQ(notes["authors_latent_bytes_kv_twice"].get<std::int64_t>(), 2 * latent);
  EXPECT_DOUBLE_EQ(notes["merged_fraction"].get<double>(), static_cast<double>(merged) / (2.0 * T));
}

// Reconstruction reads only the stored tensors: scaling the stored latents (as a chained
// quantizer would change them in place) scales K − b and V − b.
TEST_F(CommonKVTest, ReconstructsFromStoredValues) {
  TinyModel model;
  model.build(6);
  model.write(dir_);
  const core::Checkpoint ckpt(dir_);
  const auto cache = model.cache();
  auto c = run("g=2,rank=8,keep=0.5,sinks=4,recent=8", cache, &ckpt);
  const auto before = c->reconstruct(2);
  for (auto* t : c->stored())
    if (t->name.ends_with("latent"))
      for (auto& x : t->values) x *= 2.f;
  const auto after = c->reconstruct(2);
  const MatrixXd bias = model.bk[2].transpose().replicate(model.tokens, 1);
  EXPECT_LT(rel_error(as_matrix(after.key) - bias, 2 * (as_matrix(before.key) - bias)), 1e-6);
}

TEST_F(CommonKVTest, ClearErrors) {
  TinyModel model;
  model.build(7);
  model.write(dir_);
  const core::Checkpoint ckpt(dir_);
  const auto cache = model.cache();
  auto expect_error = [&](const std::string& params, const CacheSource& src, const core::Checkpoint* ck,
                          const std::vector<std::string>& fragments) {
    try {
      run(params, src, ck);
      ADD_FAILURE() << params;
    } catch (const Error& e) {
      for (const auto& f : fragments) EXPECT_THAT(e.what(), HasSubstr(f));
    }
  };
  expect_error("g=2", cache, nullptr, {"commonkv", "model directory", "--model"});
  const auto no_attn_in = model.cache(false);
  expect_error("g=2", no_attn_in, &ckpt, {"attn_in"});
  expect_error("g=6", cache, &ckpt, {"'g'", "5 layers"});
  // A checkpoint without layer 3's weights.
  fs::create_directories(dir_ / "partial");
  model.write(dir_ / "partial", 3);
  const core::Checkpoint partial(dir_ / "partial");
  expect_error("g=2", cache, &partial, {"model.layers.3.self_attn.k_proj.weight", "partial"});
  // A checkpoint of another model (d_model 24 weights, attn_in of width 16).
  TinyModel other;
  other.d_model = 16;
  other.build(8);
  fs::create_directories(dir_ / "other");
  other.write(dir_ / "other");
  const core::Checkpoint wrong(dir_ / "other");
  expect_error("g=2", cache, &wrong, {"attn_in of layer 0", "[64, 24]", "[64, 16]"});
}

// leftover=svd against a transcription of the authors' loop (rommel2021/CommonKV run_longbench.py:
// groups range(0, L, layer_step) with end_idx = min(start_idx + layer_step, L), so with L = 5 and
// g = 2 the last group is layer 4 alone, its stacked [W_k⁴; W_v⁴] (16 × 24) given its own SVD).
// Oracle: Eigen's JacobiSVD of that matrix here. The stored D_K·P and D_V·P must be its rank-r
// truncation's row blocks (products, free of the SVD's sign choices), the rebuild h·W_rᵀ + b, and
// at full rank (16) the cache itself.
TEST_F(CommonKVTest, LeftoverSvdIsTheShortenedGroupsWeightSvd) {
  TinyModel model;
  model.build(7);
  model.write(dir_);
  const core::Checkpoint ckpt(dir_);
  const auto cache = model.cache();
  const MatrixXd w = model.stacked(4, 1);
  Eigen::JacobiSVD<MatrixXd> svd(w, Eigen::ComputeThinU | Eigen::ComputeThinV);
  for (const int r : {6, 16}) {
    SCOPED_TRACE(r);
    auto c = run(fmt::format("g=2,rank={},keep=0.4,sinks=2,recent=8,leftover=svd", r), cache, &ckpt);
    const MatrixXd wr = svd.matrixU().leftCols(r) * svd.singularValues().head(r).asDiagonal() *
                        svd.matrixV().leftCols(r).transpose();
    ASSERT_NE(find(*c, "group2/P"), nullptr);
    EXPECT_EQ(find(*c, "layer4/key"), nullptr);
    EXPECT_EQ(find(*c, "layer4/latent")->shape, (core::Shape{model.tokens, r}));
    EXPECT_EQ(find(*c, "group2/merged_index")->unpack_indices(), std::vector<std::int32_t>{});
    EXPECT_EQ(find(*c, "group2/merged_latent")->shape, (core::Shape{0, r}));
    const auto m = [&](const std::string& name) {
      const auto* t = find(*c, name);
      return Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(
                 t->values.data(), t->shape[0], t->shape[1])
          .cast<double>()
          .eval();
    };
    const MatrixXd p = m("group2/P");
    EXPECT_LT(rel_error(m("layer4/D_key") * p, wr.topRows(kWidth)), 1e-5);
    EXPECT_LT(rel_error(m("layer4/D_value") * p, wr.bottomRows(kWidth)), 1e-5);
    const auto kv = c->reconstruct(4);
    const MatrixXd want_k = (model.h[4] * wr.topRows(kWidth).transpose()).rowwise() + model.bk[4].transpose();
    const MatrixXd want_v = (model.h[4] * wr.bottomRows(kWidth).transpose()).rowwise() + model.bv[4].transpose();
    EXPECT_LT(rel_error(as_matrix(kv.key), want_k), 1e-4);
    EXPECT_LT(rel_error(as_matrix(kv.value), want_v), 1e-4);
    if (r == 16) {
      EXPECT_LT(rel_error(as_matrix(kv.key), model.keys(4)), 1e-4);
    } else {
      EXPECT_GT(rel_error(as_matrix(kv.key), model.keys(4)), 0.05);  // the truncation loses something
    }
    pack_fp16_storage(c->stored());  // notes() counts the packed bytes
    const auto notes = c->notes();
    EXPECT_EQ(notes["dense_layers"], nlohmann::json::array());
    EXPECT_EQ(notes["leftover_svd_layers"], nlohmann::json::array({4}));
  }
}

// The leftover group is skipped in merging, as merge_all_kv's num_layers // layer_step groups:
// the budget counts the full groups' pairs only, so groups 0 and 1 merge the same tokens and
// rebuild the same floats as with leftover=dense, and layer 4 merges none (also at keep = 0).
TEST_F(CommonKVTest, LeftoverSvdIsNeverMerged) {
  TinyModel model;
  model.build(8);
  model.write(dir_);
  const core::Checkpoint ckpt(dir_);
  const auto cache = model.cache();
  for (const char* params : {"g=2,rank=6,keep=0.4,sinks=2,recent=8", "g=2,rank=6,keep=0,sinks=0,recent=0"}) {
    SCOPED_TRACE(params);
    auto dense = run(params, cache, &ckpt);
    auto svd = run(std::string(params) + ",leftover=svd", cache, &ckpt);
    for (int gi : {0, 1}) {
      const auto name = fmt::format("group{}/merged_index", gi);
      EXPECT_EQ(find(*svd, name)->unpack_indices(), find(*dense, name)->unpack_indices());
    }
    EXPECT_TRUE(find(*svd, "group2/merged_index")->unpack_indices().empty());
    for (int l = 0; l < 4; ++l) {
      EXPECT_EQ(svd->reconstruct(l).key.data, dense->reconstruct(l).key.data) << l;
      EXPECT_EQ(svd->reconstruct(l).value.data, dense->reconstruct(l).value.data) << l;
    }
    pack_fp16_storage(dense->stored());  // notes() counts the packed bytes
    pack_fp16_storage(svd->stored());
    EXPECT_EQ(svd->notes()["pairs"], 2 * model.tokens);
    EXPECT_EQ(svd->notes()["no_merge_budget"], dense->notes()["no_merge_budget"]);
  }
}

// Bytes with leftover=svd, counted from what is stored: the dense leftover layer's 2·2·T·N is
// replaced by its latents 2·r·T, P 2·r·d_model, D_K and D_V 2·2·N·r and biases 2·2·N; the empty
// merged latent and index add nothing.
TEST_F(CommonKVTest, LeftoverSvdBytesByFormula) {
  TinyModel model;
  model.build(5);
  model.write(dir_);
  const core::Checkpoint ckpt(dir_);
  const auto cache = model.cache();
  auto dense = run("g=2,rank=5,keep=0.3,sinks=2,recent=8", cache, &ckpt);
  auto svd = run("g=2,rank=5,keep=0.3,sinks=2,recent=8,leftover=svd", cache, &ckpt);
  pack_fp16_storage(dense->stored());
  pack_fp16_storage(svd->stored());
  const std::int64_t r = 5, N = kWidth, T = model.tokens, d = model.d_model;
  std::int64_t packed = 0;
  for (const auto* t : svd->stored()) packed += static_cast<std::int64_t>(t->packed.size());
  EXPECT_EQ(svd->bytes(), packed);
  EXPECT_EQ(svd->bytes(), dense->bytes() - 2 * 2 * T * N + 2 * r * T + 2 * r * d + 2 * 2 * N * r + 2 * 2 * N);
  EXPECT_EQ(svd->notes()["dense_layer_bytes"], 0);
  EXPECT_EQ(svd->notes()["latent_bytes"].get<std::int64_t>(),
            dense->notes()["latent_bytes"].get<std::int64_t>() + 2 * r * T);
}

}  // namespace
}  // namespace kvlab::compressors
