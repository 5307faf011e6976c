#include "datasets/synth_kv.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/kv_dump.h"

namespace kvlab::datasets {
namespace {

using core::FloatTensor;
using core::KvKind;
using Eigen::MatrixXd;

// A small instance with every decoration off and no noise: the pure planted structure.
SynthConfig pure_config() {
  SynthConfig c;
  c.layers = 6;
  c.kv_heads = 2;
  c.q_heads = 4;
  c.head_dim = 32;  // N = 64
  c.tokens = 2048;
  c.query_window = 8;
  c.samples = 2;
  c.key_rank = 16;
  c.value_rank = 24;
  c.key_decay = 0.95;
  c.value_decay = 0.97;
  c.layer_drift = 0.3;
  c.value_drift = 0.4;
  c.noise = 0;
  c.outlier_channels = 0;
  c.sink_tokens = 0;
  c.seed = 7;
  return c;
}

SynthConfig decorated_config() {
  SynthConfig c = pure_config();
  c.outlier_channels = 3;
  c.outlier_scale = 8;
  c.sink_tokens = 2;
  c.sink_scale = 8;
  return c;
}

// A [T, H, D] (or [W, H_q, D]) tensor as a T × (H·D) matrix in double.
MatrixXd as_matrix(const FloatTensor& t) {
  const std::int64_t rows = t.dim(0);
  const std::int64_t cols = t.dim(1) * t.dim(2);
  return Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(t.data.data(), rows,
                                                                                                 cols)
      .cast<double>();
}

Eigen::VectorXd singular_values(const MatrixXd& x) { return Eigen::BDCSVD<MatrixXd>(x).singularValues(); }

// Singular values above 1e-6 of the largest: f32 rounding leaves the null space at about 1e-7.
std::int64_t numerical_rank(const MatrixXd& x) {
  const Eigen::VectorXd s = singular_values(x);
  return (s.array() > 1e-6 * s(0)).count();
}

// Linear CKA, feature-space formula (Kornblith et al. 2019): column-centre, then
// ‖X̃ᵀỸ‖²_F / (‖X̃ᵀX̃‖_F ‖ỸᵀỸ‖_F).
double linear_cka(const MatrixXd& x, const MatrixXd& y) {
  const MatrixXd xc = x.rowwise() - x.colwise().mean();
  const MatrixXd yc = y.rowwise() - y.colwise().mean();
  return (xc.transpose() * yc).squaredNorm() / ((xc.transpose() * xc).norm() * (yc.transpose() * yc).norm());
}

// Mean over tokens of the cosine between the same token's rows in two layers.
double mean_token_cosine(const MatrixXd& x, const MatrixXd& y) {
  const Eigen::ArrayXd dots = (x.array() * y.array()).rowwise().sum();
  return (dots / (x.rowwise().norm().array() * y.rowwise().norm().array())).mean();
}

// Components holding `energy` of the squared singular values.
std::int64_t energy_rank(const MatrixXd& x, double energy) {
  const Eigen::ArrayXd s2 = singular_values(x).array().square();
  const double total = s2.sum();
  double acc = 0;
  for (Eigen::Index k = 0; k < s2.size(); ++k) {
    acc += s2(k);
    if (acc >= energy * total) return k + 1;
  }
  return s2.size();
}

MatrixXd concat_layers(const SynthGenerator& gen, KvKind kind, int first, int count) {
  std::vector<MatrixXd> parts;
  for (int l = first; l < first + count; ++l) parts.push_back(as_matrix(gen.layer(0, l, kind)));
  MatrixXd out(parts[0].rows(), parts[0].cols() * count);
  for (int i = 0; i < count; ++i)
    out.middleCols(i * parts[0].cols(), parts[0].cols()) = parts[static_cast<std::size_t>(i)];
  return out;
}

double median(std::vector<double> v) {
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2), v.end());
  return v[v.size() / 2];
}

TEST(SynthKv, ShapesAndMetadata) {
  const SynthGenerator gen(decorated_config());
  EXPECT_EQ(gen.layer(1, 2, KvKind::key).shape, (core::Shape{2048, 2, 32}));
  EXPECT_EQ(gen.layer(1, 2, KvKind::value).shape, (core::Shape{2048, 2, 32}));
  EXPECT_EQ(gen.layer(1, 2, KvKind::query).shape, (core::Shape{8, 4, 32}));

  const core::DumpInfo info = gen.dump_info();
  EXPECT_EQ(info.model_id, "synthetic");
  EXPECT_EQ(info.num_layers, 6);
  EXPECT_EQ(info.num_kv_heads, 2);
  EXPECT_EQ(info.num_q_heads, 4);
  EXPECT_EQ(info.head_dim, 32);
  EXPECT_EQ(info.model_config, gen.config().to_json());
  const auto json = nlohmann::json::parse(info.model_config);
  EXPECT_EQ(json.at("seed"), 7);
  EXPECT_EQ(json.at("key_rank"), 16);
  EXPECT_EQ(json.at("dtype"), "f16");

  const core::SampleMeta meta = gen.sample_meta(1);
  EXPECT_EQ(meta.id, "s1");
  EXPECT_EQ(meta.num_tokens, 2048);
  EXPECT_EQ(meta.context_end, 2040);
  EXPECT_EQ(meta.query_window, 8);
}

TEST(SynthKv, DefaultRanksAreAQuarterAndAHalfOfTheWidth) {
  SynthConfig c = pure_config();
  c.key_rank = 0;
  c.value_rank = 0;
  const SynthGenerator gen(c);
  EXPECT_EQ(gen.config().key_rank, 16);
  EXPECT_EQ(gen.config().value_rank, 32);
}

TEST(SynthKv, InvalidConfigNamesTheField) {
  auto expect_error = [](SynthConfig c, const std::string& field) {
    try {
      SynthGenerator{c};
      ADD_FAILURE() << "no error for " << field;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(field), std::string::npos) << e.what();
    }
  };
  SynthConfig c = pure_config();
  c.q_heads = 3;
  expect_error(c, "q_heads");
  c = pure_config();
  c.key_rank = 65;
  expect_error(c, "key_rank");
  c = pure_config();
  c.layer_drift = 1.5;
  expect_error(c, "layer_drift");
  c = pure_config();
  c.value_decay = 0;
  expect_error(c, "value_decay");
  c = pure_config();
  c.noise = -1;
  expect_error(c, "noise");
  c = pure_config();
  c.tokens = 8;
  expect_error(c, "tokens");
  EXPECT_THROW(SynthGenerator(pure_config()).layer(0, 6, KvKind::key), Error);
  EXPECT_THROW(SynthGenerator(pure_config()).layer(2, 0, KvKind::key), Error);
  EXPECT_THROW(SynthGenerator(pure_config()).layer(0, 0, KvKind::attn_in), Error);
}

TEST(SynthKv, DeterministicPerSeed) {
  SynthConfig c = decorated_config();
  c.noise = 0.1;
  const SynthGenerator a(c), b(c);
  for (KvKind kind : {KvKind::key, KvKind::value, KvKind::query})
    EXPECT_EQ(a.layer(1, 3, kind).data, b.layer(1, 3, kind).data) << core::to_string(kind);
  c.seed += 1;
  const SynthGenerator other(c);
  for (KvKind kind : {KvKind::key, KvKind::value, KvKind::query})
    EXPECT_NE(a.layer(1, 3, kind).data, other.layer(1, 3, kind).data) << core::to_string(kind);
  // Samples differ in their token factors.
  EXPECT_NE(a.layer(0, 3, KvKind::key).data, a.layer(1, 3, KvKind::key).data);
}

TEST(SynthKv, StreamingEqualsRandomAccess) {
  SynthConfig c = decorated_config();
  c.noise = 0.1;
  c.layers = 3;
  const SynthGenerator gen(c);
  int seen = 0;
  gen.for_each_layer(1, [&](int layer, const FloatTensor& key, const FloatTensor& value, const FloatTensor& query) {
    EXPECT_EQ(layer, seen++);
    EXPECT_EQ(key.data, gen.layer(1, layer, KvKind::key).data) << layer;
    EXPECT_EQ(value.data, gen.layer(1, layer, KvKind::value).data) << layer;
    EXPECT_EQ(query.data, gen.layer(1, layer, KvKind::query).data) << layer;
  });
  EXPECT_EQ(seen, 3);
}

TEST(SynthKv, PlantedRankOfOneLayer) {
  const SynthGenerator pure(pure_config());
  EXPECT_EQ(pure.planted_rank(KvKind::key), 16);
  EXPECT_EQ(pure.planted_rank(KvKind::value), 24);
  EXPECT_EQ(numerical_rank(as_matrix(pure.layer(0, 2, KvKind::key))), 16);
  EXPECT_EQ(numerical_rank(as_matrix(pure.layer(1, 4, KvKind::value))), 24);

  // Outliers add the offset column 1·mᵀ and sinks the indicator e_S·uᵀ: one rank each.
  const SynthGenerator decorated(decorated_config());
  EXPECT_EQ(decorated.planted_rank(KvKind::key), 18);
  EXPECT_EQ(decorated.planted_rank(KvKind::value), 24);
  EXPECT_EQ(numerical_rank(as_matrix(decorated.layer(0, 2, KvKind::key))), 18);
  EXPECT_EQ(numerical_rank(as_matrix(decorated.layer(0, 2, KvKind::value))), 24);

  // Noise makes every layer full rank.
  SynthConfig noisy = pure_config();
  noisy.noise = 0.01;
  EXPECT_EQ(numerical_rank(as_matrix(SynthGenerator(noisy).layer(0, 2, KvKind::key))), 64);
}

TEST(SynthKv, PlantedRankOfALayerGroup) {
  const SynthGenerator drifting(pure_config());
  EXPECT_EQ(drifting.planted_rank(KvKind::key, 3), 48);
  EXPECT_EQ(numerical_rank(concat_layers(drifting, KvKind::key, 1, 3)), 48);

  SynthConfig still = pure_config();
  still.layer_drift = 0;
  const SynthGenerator frozen(still);
  EXPECT_EQ(frozen.planted_rank(KvKind::key, 3), 16);
  EXPECT_EQ(numerical_rank(concat_layers(frozen, KvKind::key, 1, 3)), 16);

  // The layers share the offset column and the sink indicator: +2 for the group, not +2·G.
  const SynthGenerator decorated(decorated_config());
  EXPECT_EQ(decorated.planted_rank(KvKind::key, 3), 50);
  EXPECT_EQ(numerical_rank(concat_layers(decorated, KvKind::key, 1, 3)), 50);
}

// The singular values follow decay^k; tolerance 10%: the Gaussian token factors perturb each
// value by O(1/√T) ≈ 2% at T = 2048.
TEST(SynthKv, SpectrumFollowsTheDecay) {
  SynthConfig c = pure_config();
  c.key_rank = 8;
  c.key_decay = 0.8;
  const SynthGenerator gen(c);
  const Eigen::VectorXd s = singular_values(as_matrix(gen.layer(0, 1, KvKind::key)));
  const std::vector<double> planted = gen.planted_singular_values(KvKind::key);
  ASSERT_EQ(planted.size(), 8u);
  for (int k = 0; k < 8; ++k) {
    EXPECT_NEAR(s(k) / s(0), std::pow(0.8, k), 0.1 * std::pow(0.8, k)) << k;
    EXPECT_NEAR(s(k), planted[static_cast<std::size_t>(k)], 0.1 * planted[static_cast<std::size_t>(k)]) << k;
  }
}

TEST(SynthKv, SignalRmsIsOneAndNoiseHasTheConfiguredStd) {
  SynthConfig c = pure_config();
  const MatrixXd clean = as_matrix(SynthGenerator(c).layer(0, 1, KvKind::value));
  c.noise = 0.2;
  const MatrixXd noisy = as_matrix(SynthGenerator(c).layer(0, 1, KvKind::value));
  const double cells = static_cast<double>(clean.size());
  EXPECT_NEAR(clean.norm() / std::sqrt(cells), 1.0, 0.1);
  // The noise has its own streams: the difference is exactly noise·E.
  EXPECT_NEAR((noisy - clean).norm() / std::sqrt(cells), 0.2, 0.2 * 0.02);
}

// The mean token cosine of independent bases fluctuates by about 1/√(r_eff·N) around 0; the
// wider layers here keep that near 0.02, well inside the 0.1 bound.
TEST(SynthKv, AdjacentLayersHaveHighCkaButLowTokenCosine) {
  SynthConfig c = pure_config();
  c.head_dim = 64;
  c.key_rank = 32;
  const SynthGenerator gen(c);
  std::vector<MatrixXd> keys;
  for (int l = 0; l < 6; ++l) keys.push_back(as_matrix(gen.layer(0, l, KvKind::key)));
  for (int l = 0; l + 1 < 6; ++l) {
    const double cka = linear_cka(keys[l], keys[l + 1]);
    EXPECT_GT(cka, 0.5) << l;
    EXPECT_NEAR(cka, gen.expected_cka(KvKind::key, 1), 0.05) << l;
    EXPECT_LT(std::abs(mean_token_cosine(keys[l], keys[l + 1])), 0.1) << l;
  }
  // CKA falls with distance, as (1 − ρ²)^d.
  double previous = 1;
  for (int d = 1; d < 6; ++d) {
    const double cka = linear_cka(keys[0], keys[d]);
    EXPECT_LT(cka, previous) << d;
    EXPECT_NEAR(cka, gen.expected_cka(KvKind::key, d), 0.05) << d;
    previous = cka;
  }
}

// Outlier channels move between layers but carry shared features, and sinks are shared tokens:
// CKA stays near (1 − ρ²)^d (sinks raise it a little), token-wise cosine near 0.
TEST(SynthKv, OutliersAndSinksKeepCkaHighAndTokenCosineLow) {
  SynthConfig c = decorated_config();
  c.head_dim = 64;
  c.key_rank = 32;
  c.outlier_scale = 4;  // the outliers then hold about the share of the energy they have by default
  const SynthGenerator gen(c);
  const MatrixXd k0 = as_matrix(gen.layer(0, 0, KvKind::key));
  const MatrixXd k1 = as_matrix(gen.layer(0, 1, KvKind::key));
  EXPECT_NEAR(linear_cka(k0, k1), gen.expected_cka(KvKind::key, 1), 0.1);
  EXPECT_LT(std::abs(mean_token_cosine(k0, k1)), 0.1);
}

// xKV Figure 2: the 90%-energy rank of a group, as a fraction of its G·N columns, falls with G.
TEST(SynthKv, GroupEnergyRankFractionFallsWithGroupSize) {
  SynthConfig c = pure_config();
  c.noise = 0.05;
  const SynthGenerator gen(c);
  double previous = 1;
  for (int g : {1, 2, 4}) {
    const MatrixXd group = concat_layers(gen, KvKind::key, 0, g);
    const double fraction = static_cast<double>(energy_rank(group, 0.9)) / static_cast<double>(group.cols());
    EXPECT_LT(fraction, previous) << g;
    previous = fraction;
  }
}

TEST(SynthKv, OutlierChannelsAndSinkTokens) {
  const SynthConfig c = decorated_config();
  const SynthGenerator gen(c);
  std::vector<std::vector<Eigen::Index>> top_channels;
  for (int sample : {0, 1}) {
    const MatrixXd k = as_matrix(gen.layer(sample, 3, KvKind::key));
    // Channel RMS over the ordinary (non-sink) tokens, so the sink direction does not leak in.
    const Eigen::VectorXd channel_rms = (k.bottomRows(k.rows() - 2).array().square().colwise().mean()).sqrt();
    std::vector<double> rms(channel_rms.data(), channel_rms.data() + channel_rms.size());
    std::vector<Eigen::Index> order(rms.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = static_cast<Eigen::Index>(i);
    std::sort(order.begin(), order.end(), [&](auto x, auto y) { return rms[x] > rms[y]; });
    const double med = median(rms);
    for (int i = 0; i < 3; ++i) EXPECT_GT(rms[order[i]], 5 * med);
    EXPECT_LT(rms[order[3]], 2 * med);
    order.resize(3);
    std::sort(order.begin(), order.end());
    top_channels.push_back(order);

    // Sinks: the longest rows by far, sharing one direction.
    const Eigen::VectorXd norms = k.rowwise().norm();
    const double med_norm = median(std::vector<double>(norms.data(), norms.data() + norms.size()));
    EXPECT_GT(norms.head(2).minCoeff(), 4 * med_norm);
    EXPECT_GT(norms.head(2).minCoeff(), norms.tail(norms.size() - 2).maxCoeff());
    EXPECT_GT(k.row(0).dot(k.row(1)) / (norms(0) * norms(1)), 0.8);
  }
  // The outlier channels are a property of the "model": the same in every sample.
  EXPECT_EQ(top_channels[0], top_channels[1]);

  // Values have neither.
  const MatrixXd v = as_matrix(gen.layer(0, 3, KvKind::value));
  const Eigen::VectorXd value_rms = (v.array().square().colwise().mean()).sqrt();
  EXPECT_LT(value_rms.maxCoeff(),
            2 * median(std::vector<double>(value_rms.data(), value_rms.data() + value_rms.size())));
  const Eigen::VectorXd value_norms = v.rowwise().norm();
  EXPECT_LT(value_norms.head(2).maxCoeff(),
            2 * median(std::vector<double>(value_norms.data(), value_norms.data() + value_norms.size())));
}

// Logits q·k/√D of query row w, head h over all tokens of its KV head.
Eigen::VectorXd query_logits(const SynthConfig& c, const MatrixXd& keys, const FloatTensor& query, int w, int h) {
  const int d = c.head_dim;
  const Eigen::Map<const Eigen::VectorXf> q(query.data.data() + (std::int64_t{w} * c.q_heads + h) * d, d);
  return keys.middleCols((h / (c.q_heads / c.kv_heads)) * d, d) * q.cast<double>() / std::sqrt(double(d));
}

// Without noise and outliers (no offset), the configured logits hold exactly.
TEST(SynthKv, QueriesHitTheConfiguredLogits) {
  SynthConfig c = pure_config();
  c.sink_tokens = 3;
  const SynthGenerator gen(c);
  const MatrixXd k = as_matrix(gen.layer(0, 1, KvKind::key));
  const FloatTensor q = gen.layer(0, 1, KvKind::query);
  for (int w = 0; w < c.query_window; ++w) {
    for (int h = 0; h < c.q_heads; ++h) {
      const Eigen::VectorXd logits = query_logits(c, k, q, w, h);
      EXPECT_NEAR(logits(gen.query_target(0, 1, w, h)), c.query_logit, 1e-3 * c.query_logit);
      EXPECT_NEAR(logits.head(3).mean(), c.sink_logit, 1e-3 * c.sink_logit);
    }
  }
}

// Softmax attention of each query over its KV head's keys is far from uniform: it peaks at the
// query's target token and at the sinks. Needs a head whose keys span enough dimensions (D_eff ≳
// 2·ln T, see the header), hence the wider heads here.
TEST(SynthKv, QueriesAttendToTheirTargetsAndTheSinks) {
  SynthConfig c = decorated_config();
  c.head_dim = 64;
  c.key_rank = 64;
  c.key_decay = 0.99;
  c.noise = 0.05;
  const SynthGenerator gen(c);
  const MatrixXd k = as_matrix(gen.layer(1, 2, KvKind::key));
  const FloatTensor q = gen.layer(1, 2, KvKind::query);
  double target_mass = 0, sink_mass = 0;
  int argmax_hits = 0, count = 0;
  for (int w = 0; w < c.query_window; ++w) {
    for (int h = 0; h < c.q_heads; ++h) {
      const std::int64_t target = gen.query_target(1, 2, w, h);
      ASSERT_GE(target, c.sink_tokens);
      ASSERT_LT(target, c.tokens - c.query_window);
      const Eigen::VectorXd logits = query_logits(c, k, q, w, h);
      const Eigen::ArrayXd p = (logits.array() - logits.maxCoeff()).exp();
      const Eigen::ArrayXd attention = p / p.sum();
      target_mass += attention(target);
      sink_mass += attention.head(c.sink_tokens).sum();
      Eigen::Index best = 0;
      attention.segment(c.sink_tokens, c.tokens - c.sink_tokens).maxCoeff(&best);
      argmax_hits += best + c.sink_tokens == target;
      ++count;
    }
  }
  // Uniform attention would give 1/T to each token.
  EXPECT_GT(target_mass / count, 100.0 / static_cast<double>(c.tokens));
  EXPECT_GT(sink_mass / count, 100.0 * c.sink_tokens / static_cast<double>(c.tokens));
  EXPECT_GE(argmax_hits, count * 9 / 10);
}

class SynthDumpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("kvlab_synth_test_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path dir_;
};

// Rounds f32 values through a 16-bit storage type, as the dump writer does.
std::vector<float> rounded(core::DType dtype, const std::vector<float>& values) {
  if (dtype == core::DType::f32) return values;
  std::vector<std::uint16_t> bits(values.size());
  std::vector<float> out(values.size());
  core::f32_to_16bit(dtype, values, bits);
  core::bits16_to_f32(dtype, bits, out);
  return out;
}

TEST_F(SynthDumpTest, FileRoundTrip) {
  for (core::DType dtype : {core::DType::f16, core::DType::bf16, core::DType::f32}) {
    SynthConfig c = decorated_config();
    c.noise = 0.05;
    c.layers = 3;
    c.tokens = 1500;  // not a multiple of the token block
    c.dtype = dtype;
    const auto path = dir_ / fmt::format("synth_{}.h5", core::to_string(dtype));
    write_synthetic_dump(c, path);

    const SynthGenerator gen(c);
    const core::DumpReader reader(path);
    EXPECT_EQ(reader.info().model_id, "synthetic");
    EXPECT_EQ(reader.info().model_config, gen.config().to_json());
    EXPECT_EQ(reader.info().dtype, dtype);
    EXPECT_EQ(reader.sample_ids(), (std::vector<std::string>{"s0", "s1"}));
    const core::SampleMeta meta = reader.sample("s1");
    EXPECT_EQ(meta.num_tokens, 1500);
    EXPECT_EQ(meta.context_end, 1492);
    EXPECT_EQ(meta.query_window, 8);
    for (int l = 0; l < 3; ++l) {
      for (KvKind kind : {KvKind::key, KvKind::value, KvKind::query}) {
        const FloatTensor expected = gen.layer(1, l, kind);
        const FloatTensor read = reader.read_layer("s1", l, kind);
        EXPECT_EQ(read.shape, expected.shape);
        EXPECT_EQ(read.data, rounded(dtype, expected.data))
            << core::to_string(dtype) << " layer " << l << " " << core::to_string(kind);
      }
    }
  }
}

}  // namespace
}  // namespace kvlab::datasets
