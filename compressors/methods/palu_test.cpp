// palu on a tiny model built here: random k_proj / v_proj weights (+ biases) written with
// write_safetensors, random attn_in h, and dumped keys/values = h·Wᵀ + b, as the model computes them.
// Oracles independent of the method's code path: the weights themselves (full rank is lossless up
// to the fp16 storage, bound derived per element), Eigen's JacobiSVD of each block of rows
// (latents, truncation), Sylvester's closed form of the Hadamard matrix, the authors' quantizer
// (palu/model/modules/quant.py) transcribed here with its bytes decoded bit by bit, the byte
// formula of docs/methods/palu.md §5 and the authors' rank formula (palu/rank_search.py) by hand.
#include "compressors/methods/palu.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <Eigen/Dense>
#include <bit>
#include <cmath>
#include <filesystem>
#include <random>

#include <fmt/format.h>

#include "compressors/chain.h"
#include "core/error.h"
#include "core/error_of.h"
#include "core/safetensors.h"
#include "linalg/backend.h"
#include "results/test_support.h"

namespace kvlab::compressors {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using MatrixXd = Eigen::MatrixXd;

constexpr int kHeads = 4, kHeadDim = 4, kWidth = kHeads * kHeadDim, kDModel = 24;
constexpr std::int64_t kTokens = 48;
constexpr double kFp16 = 1.0 / 2048;  // fp16 unit roundoff 2^-11 (round to nearest)

// Random weights and inputs for `layers` layers: W_k, W_v [N, d_model], biases [N], h [T, d_model].
struct PaluModel {
  int layers = 2;
  bool biases = true;
  std::vector<MatrixXd> wk, wv, h;
  std::vector<Eigen::VectorXd> bk, bv;

  explicit PaluModel(unsigned seed, bool with_biases = true) : biases(with_biases) {
    std::mt19937 rng(seed);
    std::normal_distribution<double> normal;
    // Values rounded to f32 so the checkpoint (F32) and the oracle hold the same numbers.
    const auto random = [&](Eigen::Index r, Eigen::Index c, double scale) {
      MatrixXd m = MatrixXd::NullaryExpr(r, c, [&] { return normal(rng) * scale; });
      return MatrixXd(m.cast<float>().cast<double>());
    };
    for (int l = 0; l < layers; ++l) {
      wk.push_back(random(kWidth, kDModel, 1 / std::sqrt(double(kDModel))));
      wv.push_back(random(kWidth, kDModel, 1 / std::sqrt(double(kDModel))));
      bk.push_back(biases ? Eigen::VectorXd(random(kWidth, 1, 1)) : Eigen::VectorXd::Zero(kWidth));
      bv.push_back(biases ? Eigen::VectorXd(random(kWidth, 1, 1)) : Eigen::VectorXd::Zero(kWidth));
      h.push_back(random(kTokens, kDModel, 1));
    }
  }

  static std::vector<float> floats(const MatrixXd& m) {
    Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> r = m.cast<float>();
    return {r.data(), r.data() + r.size()};
  }

  void write(const fs::path& file) const {
    std::map<std::string, core::TensorToWrite> t;
    for (int l = 0; l < layers; ++l)
      for (const auto& [proj, w, b] : {std::tuple{"k_proj", &wk[l], &bk[l]}, std::tuple{"v_proj", &wv[l], &bv[l]}}) {
        const auto prefix = fmt::format("model.layers.{}.self_attn.{}.", l, proj);
        t[prefix + "weight"] = {{kWidth, kDModel}, floats(*w), core::DType::f32};
        if (biases) t[prefix + "bias"] = {{kWidth}, floats(*b), core::DType::f32};
      }
    core::write_safetensors(file, t);
  }

  MatrixXd keys(int l) const { return (h[l] * wk[l].transpose()).rowwise() + bk[l].transpose(); }
  MatrixXd values(int l) const { return (h[l] * wv[l].transpose()).rowwise() + bv[l].transpose(); }

  InMemoryCache cache(bool with_attn_in = true) const {
    const int window = 8;
    CacheShape shape{layers, kHeads, 2 * kHeads, kHeadDim, kTokens, window, with_attn_in ? kDModel : 0};
    std::vector<FloatTensor> k, v, q, a;
    std::mt19937 rng(7);
    std::normal_distribution<float> normal;
    const auto tensor = [](const MatrixXd& m, core::Shape s) {
      FloatTensor t(std::move(s));
      t.data = floats(m);
      return t;
    };
    for (int l = 0; l < layers; ++l) {
      k.push_back(tensor(keys(l), {kTokens, kHeads, kHeadDim}));
      v.push_back(tensor(values(l), {kTokens, kHeads, kHeadDim}));
      FloatTensor queries({window, 2 * kHeads, kHeadDim});
      for (auto& x : queries.data) x = normal(rng);
      q.push_back(std::move(queries));
      if (with_attn_in) a.push_back(tensor(h[l], {kTokens, kDModel}));
    }
    return InMemoryCache(shape, std::move(k), std::move(v), std::move(q), {}, core::Rope::standard(kHeadDim, 10000.0),
                         std::move(a));
  }
};

MatrixXd as_matrix(const FloatTensor& t) {  // [T, H, D] → [T, H·D]
  return Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(
             t.data.data(), t.shape[0], static_cast<Eigen::Index>(t.data.size()) / t.shape[0])
      .cast<double>();
}

MatrixXd stored_matrix(const StoredTensor& t) {
  return Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(t.values.data(), t.shape[0],
                                                                                                  t.shape[1])
      .cast<double>();
}

// The oracle's factors of one block W_j [g·D, d_model] (Eigen's JacobiSVD, f64): latent c = h·V_r·√S_r
// [T, r] and up projection L = U_r·√S_r [g·D, r], each column's sign free.
struct Block {
  MatrixXd latent, up;
};
Block oracle_block(const MatrixXd& w, const MatrixXd& h, int r) {
  Eigen::JacobiSVD<MatrixXd> svd(w, Eigen::ComputeThinU | Eigen::ComputeThinV);
  const Eigen::VectorXd root = svd.singularValues().head(r).cwiseSqrt();
  return {h * svd.matrixV().leftCols(r) * root.asDiagonal(), svd.matrixU().leftCols(r) * root.asDiagonal()};
}

class PaluTest : public ::testing::Test {
 protected:
  // The model's checkpoint, written once per test.
  const core::Checkpoint& checkpoint(const PaluModel& model) {
    model.write(dir_ / "model.safetensors");
    ckpt_ = std::make_unique<core::Checkpoint>(dir_ / "model.safetensors");
    return *ckpt_;
  }
  // The stage alone (values at f32 as computed), or a whole chain (fp16 tensors packed).
  static std::unique_ptr<Compressed> stage(const std::string& params, const CacheSource& cache, const core::Checkpoint* ckpt) {
    return make_palu(parse_stage(palu_method(), params))->compress({cache, linalg::cpu_backend(), ckpt});
  }
  static std::unique_ptr<Compressed> chain(const std::string& spec, const CacheSource& cache, const core::Checkpoint* ckpt) {
    return compress_chain({cache, linalg::cpu_backend(), ckpt}, parse_spec(spec));
  }
  static const StoredTensor& find(Compressed& c, const std::string& name) {
    for (auto* t : c.stored())
      if (t->name == name) return *t;
    throw std::runtime_error("no stored tensor " + name);
  }

  results::testing::TempDir dir_;  // a fresh directory per test (results/test_support.h)
  std::unique_ptr<core::Checkpoint> ckpt_;
};

TEST(PaluSpec, DefaultsCanonicalFormAndRanges) {
  EXPECT_EQ(parse_stage(palu_method(), "").to_string(),
            "palu:ratio=0.5,rank=0,group=4,block=32,alloc=uniform,bits=16,qgroup=0,quant=asym,hadamard=on");
  const auto message = [](const char* params) { return core::error_of([&] { parse_stage(palu_method(), params); }); };
  EXPECT_THAT(message("alloc=fisher"), HasSubstr("uniform"));  // not implemented: not a choice
  EXPECT_THAT(message("bits=5"), HasSubstr("16"));
  EXPECT_THAT(message("ratio=1.5"), HasSubstr("ratio"));
  EXPECT_THAT(message("group=0"), HasSubstr("group"));
  EXPECT_THAT(message("rnak=8"), HasSubstr("rank"));
}

// rank_search.py (uniform): lr_group_dims·param_ratio_target, then rounding_search_result:
// max(1, round(r / 32))·32 with Python's round (half to even). Worked by hand.
TEST(PaluRank, UniformRankIsTheAuthorsFormula) {
  EXPECT_EQ(palu_uniform_rank(512, 0.5, 32), 256);  // Llama-2-7B, group 4: 256 / 32 = 8
  EXPECT_EQ(palu_uniform_rank(512, 0.3, 32), 160);  // 153.6 / 32 = 4.8 → 5
  EXPECT_EQ(palu_uniform_rank(160, 0.5, 32), 64);   // 80 / 32 = 2.5 → 2 (half to even, not 3)
  EXPECT_EQ(palu_uniform_rank(224, 0.5, 32), 128);  // 112 / 32 = 3.5 → 4
  EXPECT_EQ(palu_uniform_rank(128, 0.1, 32), 32);   // 12.8 / 32 = 0.4 → 0 → max(1, 0)
  EXPECT_EQ(palu_uniform_rank(16, 0.5, 1), 8);
}

// H[i][j] = (−1)^popcount(i & j) / √n, Sylvester's matrix in natural order (what the fast Walsh–
// Hadamard transform applies); orthonormal; other orders refused.
TEST(PaluHadamard, SylvesterClosedForm) {
  for (std::int64_t n : {1, 2, 8, 64}) {
    const Eigen::MatrixXf h = palu_hadamard(n);
    for (std::int64_t i = 0; i < n; ++i)
      for (std::int64_t j = 0; j < n; ++j)
        EXPECT_FLOAT_EQ(h(i, j), (std::popcount(static_cast<unsigned>(i & j)) % 2 ? -1.f : 1.f) / std::sqrt(float(n)));
    EXPECT_LT((h * h.transpose() - Eigen::MatrixXf::Identity(n, n)).cwiseAbs().maxCoeff(), 1e-6);
  }
  EXPECT_THAT(core::error_of([] { palu_hadamard(12); }), HasSubstr("12"));
}

// The authors' quantize_tensor (quant.py), transcribed: per group, asym scale = max(max − min,
// 1e-5) / (2^b − 1), base = clamp(round(−min/scale)), q = clamp(round(x/scale) + base); sym
// scale = max(|x|max, 1e-5) / (2^{b−1} − 1), q = clamp(round(x/scale)); x̂ = (q − base)·scale. The
// scale rounded to fp16 first (the authors' tensors are fp16). The packed bytes decoded here bit
// by bit: every code equals the transcription's, every decoded value is (q − base)·scale, and the
// size is counted by hand.
TEST(PaluQuantizer, UnpackOfPackIsTheAuthorsDequantization) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  const std::int64_t n = 5, c = 8;
  std::vector<float> x(n * c);
  for (auto& v : x) v = static_cast<float>(Eigen::half(normal(rng) * 3));
  std::fill_n(x.begin() + 8, 4, 0.75f);  // a constant group (qgroup=4): the 1e-5 floor
  for (const int bits : {2, 3, 4, 8})
    for (const bool sym : {false, true})
      for (const std::int64_t group : {0, 4}) {
        SCOPED_TRACE(fmt::format("bits {} {} qgroup {}", bits, sym ? "sym" : "asym", group));
        const PaluQuant q{bits, group, sym};
        const auto packed = palu_quant_pack(x, n, c, q, "test");
        const std::int64_t gs = group ? group : c, groups = n * c / gs, code_bytes = (n * c * bits + 7) / 8;
        ASSERT_EQ(static_cast<std::int64_t>(packed.size()), code_bytes + groups * (sym ? 2 : 4));
        std::vector<float> got(n * c);
        palu_quant_unpack(packed, n, c, q, got);
        const float qmax = sym ? float((1 << (bits - 1)) - 1) : float((1 << bits) - 1), qmin = sym ? -qmax - 1 : 0;
        for (std::int64_t gi = 0; gi < groups; ++gi) {
          float hi = -INFINITY, lo = INFINITY;
          for (std::int64_t k = 0; k < gs; ++k) hi = std::max(hi, x[gi * gs + k]), lo = std::min(lo, x[gi * gs + k]);
          const float scale = static_cast<float>(Eigen::half(
              sym ? std::max(std::max(std::abs(hi), std::abs(lo)), 1e-5f) / qmax : std::max(hi - lo, 1e-5f) / qmax));
          const float base = sym ? 0.f : std::clamp(std::rint(-lo / scale), qmin, qmax);
          const auto at = code_bytes + gi * (sym ? 2 : 4);
          EXPECT_EQ(Eigen::numext::bit_cast<std::uint16_t>(Eigen::half(scale)), packed[at] | packed[at + 1] << 8);
          for (std::int64_t k = 0; k < gs; ++k) {
            const std::int64_t e = gi * gs + k;
            const float want_q = std::clamp(std::rint(x[e] / scale) + base, qmin, qmax);
            std::uint32_t code = 0;
            for (int b = 0; b < bits; ++b) code |= ((packed[(e * bits + b) / 8] >> ((e * bits + b) % 8)) & 1u) << b;
            EXPECT_EQ(static_cast<float>(code), want_q - qmin) << "element " << e;
            EXPECT_EQ(got[e], (want_q - base) * scale) << "element " << e;
          }
        }
      }
  EXPECT_THAT(core::error_of([&] { palu_quant_pack(x, n, c, {4, 3, false}, "latent"); }), HasSubstr("qgroup"));
}

// ratio=1, block=1: every block at full rank g·D = 8 (≤ d_model), so K = c·Lᵀ + b exactly. Stored
// as a chain stores it (latents, L and the bias at fp16, each entry within the unit roundoff u =
// 2^-11 of its value), so per element |K̂ − K| ≤ (2u + u²)·(|c|·|L|ᵀ) + u·|b|, plus 1e-5 of
// |c|·|L|ᵀ for the f32 SVD and GEMM: the bound checked, with |c| and |L| from the oracle's SVD.
TEST_F(PaluTest, FullRankReproducesKeysAndValuesWithinFp16) {
  for (const bool biases : {true, false}) {
    SCOPED_TRACE(biases ? "with biases (Qwen2)" : "no biases (Llama)");
    const PaluModel model(1, biases);
    const auto& ckpt = checkpoint(model);
    const auto cache = model.cache();
    auto c = chain("palu:group=2,ratio=1,block=1", cache, &ckpt);
    EXPECT_EQ(c->notes()["rank_per_block"], 8);
    for (int l = 0; l < model.layers; ++l)
      for (const bool key : {true, false}) {
        const MatrixXd got = as_matrix(key ? c->reconstruct(l).key : c->reconstruct(l).value);
        const MatrixXd& w = key ? model.wk[l] : model.wv[l];
        const Eigen::VectorXd& b = key ? model.bk[l] : model.bv[l];
        const MatrixXd want = key ? model.keys(l) : model.values(l);
        for (int j = 0; j < 2; ++j) {
          const auto o = oracle_block(w.middleRows(8 * j, 8), model.h[l], 8);
          const MatrixXd scale = o.latent.cwiseAbs() * o.up.cwiseAbs().transpose();
          const MatrixXd bound = (scale * (2 * kFp16 + kFp16 * kFp16 + 1e-5)).rowwise() +
                                 (b.segment(8 * j, 8).cwiseAbs() * kFp16).transpose();
          const MatrixXd err = (got.middleCols(8 * j, 8) - want.middleCols(8 * j, 8)).cwiseAbs();
          EXPECT_TRUE((err.array() <= bound.array()).all())
              << "layer " << l << (key ? " key" : " value") << " block " << j << ": worst excess "
              << (err - bound).maxCoeff();
        }
        EXPECT_GT((got - want).norm(), 0);  // the fp16 storage is really there
      }
  }
}

// rank 3 < g·D = 8, hadamard irrelevant at 16 bits: the stage's f32 latents equal Eigen's
// h·V_r·√S_r column by column up to sign, and the rebuilt keys/values equal h·W_rᵀ + b with W_r
// the block's rank-r truncation (relative 1e-4: f32 gesdd and GEMMs on O(1) data, singular gaps
// O(0.1)).
TEST_F(PaluTest, LatentsAndTruncationMatchEigensSvd) {
  const PaluModel model(2);
  const auto& ckpt = checkpoint(model);
  const auto cache = model.cache();
  auto c = stage("group=2,rank=3", cache, &ckpt);
  for (int l = 0; l < model.layers; ++l)
    for (const bool key : {true, false}) {
      const MatrixXd got = as_matrix(key ? c->reconstruct(l).key : c->reconstruct(l).value);
      const MatrixXd& w = key ? model.wk[l] : model.wv[l];
      const Eigen::VectorXd& b = key ? model.bk[l] : model.bv[l];
      for (int j = 0; j < 2; ++j) {
        SCOPED_TRACE(fmt::format("layer {} {} block {}", l, key ? "key" : "value", j));
        const auto o = oracle_block(w.middleRows(8 * j, 8), model.h[l], 3);
        const MatrixXd latent = stored_matrix(find(*c, fmt::format("layer{}/{}/group{}/latent", l, key ? "key" : "value", j)));
        ASSERT_EQ(latent.cols(), 3);
        for (int k = 0; k < 3; ++k) {
          const double sign = latent.col(k).dot(o.latent.col(k)) < 0 ? -1 : 1;
          EXPECT_LT((sign * latent.col(k) - o.latent.col(k)).norm(), 1e-4 * o.latent.col(k).norm()) << "column " << k;
        }
        const MatrixXd want = (o.latent * o.up.transpose()).rowwise() + b.segment(8 * j, 8).transpose();
        EXPECT_LT((got.middleCols(8 * j, 8) - want).norm(), 1e-4 * want.norm());
        const MatrixXd exact = key ? model.keys(l) : model.values(l);
        EXPECT_GT((got.middleCols(8 * j, 8) - exact.middleCols(8 * j, 8)).norm(), 0.05 * want.norm());  // truncated
      }
    }
}

// bits=8 symmetric with the Hadamard rotation, full rank r = 8: the stored latents are c·H (H
// orthonormal), quantized per token over the whole row; the stored up projections are L·H, so
// up·upᵀ = L·Lᵀ (the oracle's, sign-free). Each latent element's error is at most scale/2 + u·|x|
// with scale = max|c_t·H|/127 ≤ ‖c_t‖/127 (‖c_t·H‖ = ‖c_t‖), so a row's is ≤ √r·‖c_t‖·(1/254 + u)
// and ‖ΔK_t‖ ≤ that · σ_max(L), plus the fp16 storage of L: u·‖c_t‖·‖L‖_F. Without the rotation on
// either side the error would be O(1). (Asymmetric groups of one sign are clipped by the authors'
// zero point clamp, docs/methods/palu.md §3: no such bound; the transcription test covers them.)
TEST_F(PaluTest, HadamardQuantizedLatentsStayWithinTheQuantizationBound) {
  const PaluModel model(4, false);
  const auto& ckpt = checkpoint(model);
  const auto cache = model.cache();
  auto c = chain("palu:group=2,ratio=1,block=1,bits=8,quant=sym,hadamard=on", cache, &ckpt);
  for (int l = 0; l < model.layers; ++l)
    for (const bool key : {true, false}) {
      const auto part = key ? "key" : "value";
      const MatrixXd got = as_matrix(key ? c->reconstruct(l).key : c->reconstruct(l).value);
      const MatrixXd want = key ? model.keys(l) : model.values(l);
      for (int j = 0; j < 2; ++j) {
        SCOPED_TRACE(fmt::format("layer {} {} block {}", l, part, j));
        const auto o = oracle_block((key ? model.wk[l] : model.wv[l]).middleRows(8 * j, 8), model.h[l], 8);
        const auto& latent = find(*c, fmt::format("layer{}/{}/group{}/latent", l, part, j));
        EXPECT_EQ(latent.format, "palu8 g0 sym hadamard");
        EXPECT_EQ(latent.layout, QuantLayout::none);
        std::vector<float> decoded(latent.values.size());  // the values are what the bytes give back
        palu_quant_unpack(latent.packed, kTokens, 8, {8, 0, true}, decoded);
        EXPECT_EQ(decoded, latent.values);
        const MatrixXd up = stored_matrix(find(*c, fmt::format("layer{}/{}/group{}/up", l, part, j)));
        EXPECT_LT((up * up.transpose() - o.up * o.up.transpose()).norm(), 4 * kFp16 * (o.up * o.up.transpose()).norm());
        // Rotated: the stored up projection is not L itself (column signs aside).
        EXPECT_GT((up.cwiseAbs() - o.up.cwiseAbs()).norm(), 0.1 * o.up.norm());
        const double sigma = Eigen::JacobiSVD<MatrixXd>(o.up).singularValues()(0);
        for (Eigen::Index t = 0; t < kTokens; ++t) {
          const double norm = o.latent.row(t).norm();
          const double bound = std::sqrt(8.0) * norm * (1.0 / 254 + kFp16) * sigma + kFp16 * norm * o.up.norm() + 1e-5 * norm * sigma;
          EXPECT_LE((got.row(t).segment(8 * j, 8) - want.row(t).segment(8 * j, 8)).norm(), bound) << "token " << t;
        }
      }
    }
}

// Bytes by hand (docs/methods/palu.md §5): L = 2 layers, K and V, 2 blocks of g·D = 8 rows, rank r,
// T = 48: latents 8 tensors [48, r], up projections 8 × [8, r] at fp16, biases 4 × [1, 16] at fp16.
TEST_F(PaluTest, BytesCountedByHand) {
  const PaluModel model(5);
  const auto& ckpt = checkpoint(model);
  const auto cache = model.cache();
  const std::int64_t factors = 8 * 8 * 4 * 2, biases = 4 * 16 * 2;
  auto plain = chain("palu:group=2,rank=4", cache, &ckpt);
  EXPECT_EQ(plain->bytes(), 8 * 48 * 4 * 2 + factors + biases);
  EXPECT_EQ(plain->notes()["latent_bytes"], 8 * 48 * 4 * 2);
  // 3 bits, groups of 2 channels, asym: ⌈48·4·3/8⌉ = 72 bytes of codes + 48·2 groups · 4 bytes.
  auto quantized = chain("palu:group=2,rank=4,bits=3,qgroup=2", cache, &ckpt);
  EXPECT_EQ(quantized->bytes(), 8 * (72 + 48 * 2 * 4) + factors + biases);
  // sym: scales only, 2 bytes a group.
  auto sym = chain("palu:group=2,rank=4,bits=3,qgroup=2,quant=sym", cache, &ckpt);
  EXPECT_EQ(sym->bytes(), 8 * (72 + 48 * 2 * 2) + factors + biases);
  // The authors' printed saving: 1 − Σ ranks / Σ (g·D) = 1 − 4/8.
  EXPECT_DOUBLE_EQ(plain->notes()["authors_kv_compression_percent"].get<double>(), 50.0);
  // Bytes are the packed buffers.
  std::int64_t sum = 0;
  for (auto* t : quantized->stored()) sum += static_cast<std::int64_t>(t->packed.size());
  EXPECT_EQ(sum, quantized->bytes());
}

// Eviction in front: the transform sees the kept tokens only; kept cells rebuild to fp16 accuracy,
// evicted ones are marked so, and the latents hold the rows of the tokens some head kept.
TEST_F(PaluTest, ChainsWithEvictionInFrontAndKiviBehind) {
  const PaluModel model(6);
  const auto& ckpt = checkpoint(model);
  const auto cache = model.cache();
  auto c = chain("streamingllm:budget=24,sinks=4+palu:group=2,ratio=1,block=1", cache, &ckpt);
  for (int l = 0; l < model.layers; ++l) {
    const auto kv = c->reconstruct(l);
    ASSERT_FALSE(kv.kept.empty());
    const MatrixXd got = as_matrix(kv.key), want = model.keys(l);
    for (std::int64_t t = 0; t < kTokens; ++t) {
      const bool kept = t < 4 || t >= kTokens - 20;
      EXPECT_EQ(kv.holds(t, 0, kHeads), kept) << "token " << t;
      if (kept) {
        EXPECT_LT((got.row(t) - want.row(t)).norm(), 4e-3 * want.row(t).norm()) << "token " << t;
      }
    }
  }
  EXPECT_EQ(find(*c, "layer0/key/group0/latent").shape, (core::Shape{24, 8}));
  // kivi behind: the fp16 latents are quantizable (per token rows), the up projections are not.
  auto k = chain("palu:group=2,rank=8+kivi:bits=4,group=8,residual=0", cache, &ckpt);
  EXPECT_EQ(find(*k, "layer1/value/group1/latent").format, "kivi4 g8 r0");
  EXPECT_EQ(find(*k, "layer1/value/group1/up").format, "fp16");
}

TEST_F(PaluTest, ClearErrors) {
  const PaluModel model(8);
  const auto& ckpt = checkpoint(model);
  const auto cache = model.cache();
  const auto error = [&](const std::string& params, const CacheSource& source, const core::Checkpoint* weights) {
    return core::error_of([&] { stage(params, source, weights); });
  };
  EXPECT_THAT(error("group=2", cache, nullptr), HasSubstr("--model"));
  EXPECT_THAT(error("group=2", model.cache(false), &ckpt), HasSubstr("attn_in"));
  EXPECT_THAT(error("group=3", cache, &ckpt), HasSubstr("'group' = 3 does not divide the 4 KV heads"));
  EXPECT_THAT(error("group=2,rank=6,bits=4", cache, &ckpt), HasSubstr("power-of-two rank per block, got 6"));
  EXPECT_THAT(error("group=2,rank=8,bits=4,qgroup=3", cache, &ckpt), HasSubstr("'qgroup' = 3"));
  // A checkpoint without layer 1's weights (projection_weights.h names the tensor).
  PaluModel first_layer_only = model;
  first_layer_only.layers = 1;
  first_layer_only.write(dir_ / "short.safetensors");
  const core::Checkpoint short_ckpt(dir_ / "short.safetensors");
  EXPECT_THAT(error("group=2", cache, &short_ckpt), HasSubstr("no tensor 'model.layers.1.self_attn.k_proj.weight'"));
}

}  // namespace
}  // namespace kvlab::compressors
