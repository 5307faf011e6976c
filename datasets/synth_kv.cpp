#include "datasets/synth_kv.h"

#include <Eigen/Cholesky>
#include <Eigen/Core>
#include <Eigen/QR>
#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <numbers>
#include <random>

#include "core/error.h"
#include "core/parallel.h"
#include "core/progress.h"

namespace kvlab::datasets {

using core::KvKind;
using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

namespace {

// ---------------------------------------------------------------------------------------------
// Random streams

// Independent streams of one generator; the numbers are part of the output's definition.
enum class Stream : std::uint64_t {
  factor = 1,
  noise,
  basis,
  outliers,
  outlier_features,
  sink,
  query_target,
  query_noise
};
constexpr std::int64_t kNoSample = -1;  // streams of the "weights", shared by all samples
constexpr int kAllLayers = -1;          // streams shared by all layers
constexpr double kQueryRidge = 0.1;     // see make_query

std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// A generator for one (seed, stream, sample, layer, kind, block): any part of the output can be
// produced alone, in any order, on any thread.
std::mt19937_64 stream_rng(std::uint64_t seed, Stream stream, std::int64_t sample, int layer, KvKind kind,
                           std::int64_t block = 0) {
  std::uint64_t h = splitmix64(seed);
  for (std::uint64_t part :
       {static_cast<std::uint64_t>(stream), static_cast<std::uint64_t>(sample), static_cast<std::uint64_t>(layer),
        static_cast<std::uint64_t>(kind), static_cast<std::uint64_t>(block)})
    h = splitmix64(h ^ part);
  return std::mt19937_64(h);
}

// Standard normals by Marsaglia's polar method: each raw 64-bit output gives a point (u, v) of
// [−1, 1)² with 24-bit coordinates; points inside the unit disc (s = u² + v², 0 < s < 1) become the
// two normals (u, v)·√(−2·ln s / s). Written out because std::normal_distribution's algorithm is
// implementation-defined. The log and sqrt run on Eigen's vectorized float arrays because the noise
// floor needs one normal per output element (and not sin/cos: GCC 12 warns falsely inside the
// AVX-512 intrinsics that Eigen's sin/cos inline).
void fill_normal(std::mt19937_64& rng, float* out, std::int64_t n) {
  constexpr std::int64_t kBatch = 512;  // accepted points per batch
  constexpr float kInv23 = 1.0f / 8388608.0f;
  Eigen::ArrayXf u(kBatch), v(kBatch), s(kBatch), factor(kBatch);
  for (std::int64_t start = 0; start < n; start += 2 * kBatch) {
    const std::int64_t pairs = std::min(kBatch, (n - start + 1) / 2);
    for (std::int64_t i = 0; i < pairs;) {
      const std::uint64_t bits = rng();
      const float x = static_cast<float>(bits >> 40) * kInv23 - 1.0f;
      const float y = static_cast<float>((bits >> 16) & 0xffffffULL) * kInv23 - 1.0f;
      const float r2 = x * x + y * y;
      if (r2 >= 1.0f || r2 == 0.0f) continue;
      u(i) = x;
      v(i) = y;
      s(i) = r2;
      ++i;
    }
    factor.head(pairs) = (-2.0f * s.head(pairs).log() / s.head(pairs)).sqrt();
    const std::int64_t count = std::min(2 * pairs, n - start);
    Eigen::Map<Eigen::ArrayXf>(out + start, pairs) = u.head(pairs) * factor.head(pairs);
    Eigen::Map<Eigen::ArrayXf>(out + start + pairs, count - pairs) = v.head(count - pairs) * factor.head(count - pairs);
  }
}

RowMatrix normal_matrix(std::mt19937_64& rng, std::int64_t rows, std::int64_t cols) {
  RowMatrix m(rows, cols);
  fill_normal(rng, m.data(), m.size());
  return m;
}

// Uniform integer in [0, n) (Lemire's multiply-shift; portable, unlike uniform_int_distribution).
std::int64_t uniform_below(std::mt19937_64& rng, std::int64_t n) {
  return static_cast<std::int64_t>((static_cast<unsigned __int128>(rng()) * static_cast<std::uint64_t>(n)) >> 64);
}

// k distinct indices of [0, n), sorted (partial Fisher–Yates).
std::vector<int> random_subset(std::mt19937_64& rng, int n, int k) {
  std::vector<int> all(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) all[static_cast<std::size_t>(i)] = i;
  for (int i = 0; i < k; ++i)
    std::swap(all[static_cast<std::size_t>(i)], all[static_cast<std::size_t>(i + uniform_below(rng, n - i))]);
  all.resize(static_cast<std::size_t>(k));
  std::sort(all.begin(), all.end());
  return all;
}

// [rows, cols] with orthonormal rows (rows ≤ cols): the Q factor of a Gaussian matrix.
RowMatrix orthonormal_rows(std::mt19937_64& rng, int rows, int cols) {
  const Eigen::MatrixXf gaussian = normal_matrix(rng, cols, rows);
  const Eigen::HouseholderQR<Eigen::MatrixXf> qr(gaussian);
  const Eigen::MatrixXf q = qr.householderQ() * Eigen::MatrixXf::Identity(cols, rows);
  return q.transpose();
}

// ---------------------------------------------------------------------------------------------
// Per-kind parameters

struct KindParams {
  int rank;
  double decay;
  double drift;    // ρ
  double scale;    // c = √(N / Σ_k decay^{2k})
  bool decorated;  // keys: outliers and sinks
};

double spectrum_energy(int rank, double decay) {
  double energy = 0;
  for (int k = 0; k < rank; ++k) energy += std::pow(decay, 2.0 * k);
  return energy;
}

KindParams kind_params(const SynthConfig& c, KvKind kind) {
  if (kind == KvKind::key)
    return {c.key_rank, c.key_decay, c.layer_drift, std::sqrt(c.width() / spectrum_energy(c.key_rank, c.key_decay)),
            true};
  if (kind == KvKind::value)
    return {c.value_rank, c.value_decay, c.value_drift,
            std::sqrt(c.width() / spectrum_energy(c.value_rank, c.value_decay)), false};
  fail("synthetic KV: kind '{}' has no planted structure (key or value)", core::to_string(kind));
}

// ---------------------------------------------------------------------------------------------
// Config validation

void require(bool ok, std::string_view field, const std::string& value, std::string_view rule) {
  if (!ok) fail("synth config: {} = {} {}", field, value, rule);
}

void validate(const SynthConfig& c) {
  auto str = [](auto v) { return fmt::format("{}", v); };
  require(c.layers >= 1, "layers", str(c.layers), "must be at least 1");
  require(c.kv_heads >= 1, "kv_heads", str(c.kv_heads), "must be at least 1");
  require(c.head_dim >= 1, "head_dim", str(c.head_dim), "must be at least 1");
  require(c.q_heads >= c.kv_heads && c.q_heads % c.kv_heads == 0, "q_heads", str(c.q_heads),
          fmt::format("must be a positive multiple of kv_heads ({})", c.kv_heads));
  require(c.samples >= 1, "samples", str(c.samples), "must be at least 1");
  require(c.sink_tokens >= 0, "sink_tokens", str(c.sink_tokens), "must be at least 0");
  require(c.query_window >= 1, "query_window", str(c.query_window), "must be at least 1");
  require(c.tokens > c.sink_tokens + std::int64_t{c.query_window}, "tokens", str(c.tokens),
          fmt::format("must exceed sink_tokens + query_window ({}): queries target context tokens after the sinks",
                      c.sink_tokens + std::int64_t{c.query_window}));
  const int n = c.width();
  require(c.key_rank >= 0 && c.key_rank <= n, "key_rank", str(c.key_rank),
          fmt::format("must be in [1, {}] (kv_heads·head_dim), or 0 for {}", n, std::max(1, n / 4)));
  require(c.value_rank >= 0 && c.value_rank <= n, "value_rank", str(c.value_rank),
          fmt::format("must be in [1, {}] (kv_heads·head_dim), or 0 for {}", n, std::max(1, n / 2)));
  require(c.key_decay > 0 && c.key_decay <= 1, "key_decay", str(c.key_decay), "must be in (0, 1]");
  require(c.value_decay > 0 && c.value_decay <= 1, "value_decay", str(c.value_decay), "must be in (0, 1]");
  require(c.layer_drift >= 0 && c.layer_drift <= 1, "layer_drift", str(c.layer_drift), "must be in [0, 1]");
  require(c.value_drift >= 0 && c.value_drift <= 1, "value_drift", str(c.value_drift), "must be in [0, 1]");
  require(c.noise >= 0 && std::isfinite(c.noise), "noise", str(c.noise), "must be finite and at least 0");
  require(c.outlier_channels >= 0 && c.outlier_channels <= n, "outlier_channels", str(c.outlier_channels),
          fmt::format("must be in [0, {}] (kv_heads·head_dim)", n));
  require(c.outlier_scale > 0 && std::isfinite(c.outlier_scale), "outlier_scale", str(c.outlier_scale),
          "must be finite and positive");
  require(c.sink_scale >= 0 && std::isfinite(c.sink_scale), "sink_scale", str(c.sink_scale),
          "must be finite and at least 0");
  require(std::isfinite(c.query_logit), "query_logit", str(c.query_logit), "must be finite");
  require(std::isfinite(c.sink_logit), "sink_logit", str(c.sink_logit), "must be finite");
}

}  // namespace

std::string SynthConfig::to_json() const {
  const nlohmann::json j = {
      {"generator", "kvlab synthetic KV"},
      // The queries are matched filters on the pre-RoPE keys: attention must not rotate them.
      {"rope_type", "none"},
      {"layers", layers},
      {"kv_heads", kv_heads},
      {"q_heads", q_heads},
      {"head_dim", head_dim},
      {"tokens", tokens},
      {"query_window", query_window},
      {"samples", samples},
      {"key_rank", key_rank},
      {"value_rank", value_rank},
      {"key_decay", key_decay},
      {"value_decay", value_decay},
      {"layer_drift", layer_drift},
      {"value_drift", value_drift},
      {"noise", noise},
      {"outlier_channels", outlier_channels},
      {"outlier_scale", outlier_scale},
      {"sink_tokens", sink_tokens},
      {"sink_scale", sink_scale},
      {"query_logit", query_logit},
      {"sink_logit", sink_logit},
      {"dtype", core::to_string(dtype)},
      {"seed", seed},
      {"token_block", kTokenBlock},
  };
  return j.dump();
}

// ---------------------------------------------------------------------------------------------
// Generator

struct SynthGenerator::LayerModel {
  RowMatrix mix;                       // [r, N] c·Σ·B_l, with w_j in the outlier channels
  std::vector<int> outlier_channels;   // sorted; keys only
  std::vector<float> outlier_offsets;  // m_l on those channels (±1)
  Eigen::RowVectorXf sink;             // [N] sink_scale·ν_l·u_l; empty without sinks
};

struct SynthGenerator::Chain {
  RowMatrix a;       // [T, r] A_layer
  int layer = -1;    // the layer `a` belongs to; −1 before the first advance
  LayerModel model;  // of `layer`, when it was rendered
};

SynthGenerator::SynthGenerator(SynthConfig config) : config_(std::move(config)) {
  validate(config_);
  if (config_.key_rank == 0) config_.key_rank = std::max(1, config_.width() / 4);
  if (config_.value_rank == 0) config_.value_rank = std::max(1, config_.width() / 2);
}

core::DumpInfo SynthGenerator::dump_info() const {
  core::DumpInfo info;
  info.num_layers = config_.layers;
  info.num_kv_heads = config_.kv_heads;
  info.num_q_heads = config_.q_heads;
  info.head_dim = config_.head_dim;
  info.dtype = config_.dtype;
  info.model_id = "synthetic";
  info.model_config = config_.to_json();
  info.chat_template = "none";
  return info;
}

core::SampleMeta SynthGenerator::sample_meta(int sample) const {
  if (sample < 0 || sample >= config_.samples) fail("synthetic KV: sample {} outside [0, {})", sample, config_.samples);
  core::SampleMeta meta;
  meta.id = fmt::format("s{}", sample);
  meta.num_tokens = config_.tokens;
  meta.context_end = config_.tokens - config_.query_window;
  meta.query_window = config_.query_window;
  return meta;
}

// The expected norm of a key row without the sink term: √(Σ_c D_c²·(‖mix_{:,c}‖² + m_c²)), since
// every token-factor row is N(0, I). Sinks are scaled by it, so that sink_scale means "times an
// ordinary row" whether or not outlier channels inflate the rows.
double SynthGenerator::ordinary_row_norm(const LayerModel& model) const {
  Eigen::ArrayXd energy = model.mix.cast<double>().colwise().squaredNorm().transpose().array();
  const double scale2 = config_.outlier_scale * config_.outlier_scale;
  for (std::size_t i = 0; i < model.outlier_channels.size(); ++i) {
    const int c = model.outlier_channels[i];
    energy(c) = scale2 * (energy(c) + double(model.outlier_offsets[i]) * model.outlier_offsets[i]);
  }
  return std::sqrt(energy.sum());
}

SynthGenerator::LayerModel SynthGenerator::layer_model(int layer, KvKind kind) const {
  const KindParams p = kind_params(config_, kind);
  const int n = config_.width();
  LayerModel model;
  auto basis_rng = stream_rng(config_.seed, Stream::basis, kNoSample, layer, kind);
  model.mix = orthonormal_rows(basis_rng, p.rank, n);
  for (int k = 0; k < p.rank; ++k) model.mix.row(k) *= static_cast<float>(p.scale * std::pow(p.decay, k));
  if (!p.decorated) return model;

  auto outlier_rng = stream_rng(config_.seed, Stream::outliers, kNoSample, layer, kind);
  model.outlier_channels = random_subset(outlier_rng, n, config_.outlier_channels);
  for (std::size_t i = 0; i < model.outlier_channels.size(); ++i)
    model.outlier_offsets.push_back((outlier_rng() & 1) != 0 ? 1.0f : -1.0f);
  // The outlier channels' columns w_j = c·Σ·g_j/√N are the same in every layer (see the header).
  auto feature_rng = stream_rng(config_.seed, Stream::outlier_features, kNoSample, kAllLayers, kind);
  const RowMatrix features = normal_matrix(feature_rng, p.rank, config_.outlier_channels);
  for (int j = 0; j < config_.outlier_channels; ++j)
    for (int k = 0; k < p.rank; ++k)
      model.mix(k, model.outlier_channels[static_cast<std::size_t>(j)]) =
          static_cast<float>(p.scale * std::pow(p.decay, k) / std::sqrt(double(n))) * features(k, j);
  if (config_.sink_tokens > 0) {
    auto sink_rng = stream_rng(config_.seed, Stream::sink, kNoSample, layer, kind);
    Eigen::RowVectorXf u(n);
    fill_normal(sink_rng, u.data(), n);
    model.sink = u.normalized() * static_cast<float>(config_.sink_scale * ordinary_row_norm(model));
  }
  return model;
}

// Moves `chain` to the next layer and, when `out` is given, writes that layer's tensor [T, N]
// (and keeps the layer's model in chain.model).
// Token blocks are independent: block b's factors, noise and rows come from its own streams.
void SynthGenerator::advance(int sample, KvKind kind, Chain& chain, core::FloatTensor* out) const {
  const KindParams p = kind_params(config_, kind);
  const int layer = chain.layer + 1;
  const std::int64_t T = config_.tokens;
  const int n = config_.width();
  const bool fresh_factors = layer == 0 || p.drift > 0;  // ρ = 0: A_l = A_{l−1}
  const auto keep = static_cast<float>(std::sqrt(1 - p.drift * p.drift));
  const auto drift = static_cast<float>(p.drift);
  if (layer == 0) chain.a.resize(T, p.rank);
  chain.model = out != nullptr ? layer_model(layer, kind) : LayerModel{};
  const LayerModel& model = chain.model;
  const core::Shape shape{T, config_.kv_heads, config_.head_dim};
  if (out != nullptr && out->shape != shape) *out = core::FloatTensor(shape);  // reused across layers

  const std::int64_t blocks = (T + kTokenBlock - 1) / kTokenBlock;
  core::parallel_for(blocks, [&](std::int64_t b) {
    const std::int64_t t0 = b * kTokenBlock;
    const std::int64_t rows = std::min(kTokenBlock, T - t0);
    auto a = chain.a.middleRows(t0, rows);
    if (fresh_factors) {
      auto rng = stream_rng(config_.seed, Stream::factor, sample, layer, kind, b);
      const RowMatrix fresh = normal_matrix(rng, rows, p.rank);
      if (layer == 0)
        a = fresh;
      else
        a = keep * a + drift * fresh;
    }
    if (out == nullptr) return;

    Eigen::Map<RowMatrix> x(out->data.data() + t0 * n, rows, n);
    x.noalias() = a * model.mix;
    const auto scale = static_cast<float>(config_.outlier_scale);
    for (std::size_t i = 0; i < model.outlier_channels.size(); ++i) {
      auto column = x.col(model.outlier_channels[i]);
      column = (column.array() + model.outlier_offsets[i]) * scale;
    }
    if (model.sink.size() > 0)
      for (std::int64_t t = t0; t < std::min<std::int64_t>(t0 + rows, config_.sink_tokens); ++t)
        x.row(t - t0) += model.sink;
    if (config_.noise > 0) {
      auto rng = stream_rng(config_.seed, Stream::noise, sample, layer, kind, b);
      x += static_cast<float>(config_.noise) * normal_matrix(rng, rows, n);
    }
  });
  chain.layer = layer;
}

std::vector<std::int64_t> SynthGenerator::query_targets(int sample, int layer) const {
  auto rng = stream_rng(config_.seed, Stream::query_target, sample, layer, KvKind::query);
  const std::int64_t first = config_.sink_tokens;
  const std::int64_t count = config_.tokens - config_.query_window - first;
  std::vector<std::int64_t> targets(static_cast<std::size_t>(config_.query_window) * config_.q_heads);
  for (auto& t : targets) t = first + uniform_below(rng, count);
  return targets;
}

std::int64_t SynthGenerator::query_target(int sample, int layer, int window_row, int q_head) const {
  if (window_row < 0 || window_row >= config_.query_window || q_head < 0 || q_head >= config_.q_heads)
    fail("synthetic KV: query row {} head {} outside [0, {}) × [0, {})", window_row, q_head, config_.query_window,
         config_.q_heads);
  return query_targets(sample, layer)[static_cast<std::size_t>(window_row) * config_.q_heads + q_head];
}

// Queries [W, H_q, D] from the finished keys [T, N] of the same layer. Each query is the
// minimum-norm solution, in the metric P of its KV head's key covariance, of the logit constraints
// q·k̃_π = √D·query_logit and q·s̃ = √D·sink_logit:
//   q = P·C·(CᵀP·C)⁻¹·√D·ℓ,  C = [k̃_π, s̃], ℓ = [query_logit, sink_logit],
//   P = (Σ_g + kQueryRidge·tr(Σ_g)/D·I)⁻¹,  Σ_g = D_g·M_gᵀM_g·D_g + noise²·I.
// With P = I the query would be a plain multiple of k̃_π, and any token longer along k̃_π would
// outscore the target; the (nearly) whitening P makes q the matched filter for its targets, so other
// tokens' logits are about N(0, ℓ²/rank Σ_g) and the targets stand out. Σ_g is the population
// covariance, known from the model because every token-factor row is N(0, I); the ridge keeps q
// from amplifying the directions where the keys barely vary (the noise floor).
core::FloatTensor SynthGenerator::make_query(int sample, int layer, const core::FloatTensor& keys,
                                             const LayerModel& model) const {
  const int n = config_.width();
  const int d = config_.head_dim;
  const int group = config_.q_heads / config_.kv_heads;
  const bool sinks = config_.sink_tokens > 0;
  const Eigen::Map<const RowMatrix> k(keys.data.data(), config_.tokens, n);

  // The constant offset m_l·D_l (the same in every row) and the per-channel scale D_l.
  Eigen::RowVectorXd offset = Eigen::RowVectorXd::Zero(n);
  Eigen::VectorXd channel_scale = Eigen::VectorXd::Ones(n);
  for (std::size_t i = 0; i < model.outlier_channels.size(); ++i) {
    offset(model.outlier_channels[i]) = model.outlier_offsets[i] * config_.outlier_scale;
    channel_scale(model.outlier_channels[i]) = config_.outlier_scale;
  }
  const Eigen::RowVectorXd sink_mean =
      sinks ? Eigen::RowVectorXd(k.topRows(config_.sink_tokens).cast<double>().colwise().mean() - offset)
            : Eigen::RowVectorXd::Zero(n);
  Eigen::VectorXd logits(sinks ? 2 : 1);
  logits(0) = config_.query_logit * std::sqrt(double(d));
  if (sinks) logits(1) = config_.sink_logit * std::sqrt(double(d));

  std::vector<Eigen::MatrixXd> precision;  // P_g = Σ_g⁺ per KV head
  for (int g = 0; g < config_.kv_heads; ++g) {
    const Eigen::MatrixXd mg =
        model.mix.middleCols(g * d, d).cast<double>() * channel_scale.segment(g * d, d).asDiagonal();
    Eigen::MatrixXd cov = mg.transpose() * mg + config_.noise * config_.noise * Eigen::MatrixXd::Identity(d, d);
    cov += kQueryRidge * cov.trace() / d * Eigen::MatrixXd::Identity(d, d);
    precision.push_back(cov.ldlt().solve(Eigen::MatrixXd::Identity(d, d)));
  }

  const std::vector<std::int64_t> targets = query_targets(sample, layer);
  auto noise_rng = stream_rng(config_.seed, Stream::query_noise, sample, layer, KvKind::query);
  core::FloatTensor query({config_.query_window, config_.q_heads, d});
  Eigen::Map<RowMatrix> q(query.data.data(), std::int64_t{config_.query_window} * config_.q_heads, d);
  Eigen::RowVectorXf noise(d);
  for (std::int64_t row = 0; row < q.rows(); ++row) {
    const int g = static_cast<int>(row % config_.q_heads) / group;
    Eigen::MatrixXd c(d, logits.size());
    c.col(0) =
        (k.row(targets[static_cast<std::size_t>(row)]).segment(g * d, d).cast<double>() - offset.segment(g * d, d))
            .transpose();
    if (sinks) c.col(1) = sink_mean.segment(g * d, d).transpose();
    const Eigen::MatrixXd pc = precision[static_cast<std::size_t>(g)] * c;
    q.row(row) = (pc * (c.transpose() * pc).ldlt().solve(logits)).transpose().cast<float>();
    if (config_.noise > 0) {
      fill_normal(noise_rng, noise.data(), d);
      q.row(row) +=
          static_cast<float>(config_.noise) * q.row(row).norm() / static_cast<float>(std::sqrt(double(d))) * noise;
    }
  }
  return query;
}

core::FloatTensor SynthGenerator::layer(int sample, int layer, KvKind kind) const {
  sample_meta(sample);  // validates the sample index
  if (layer < 0 || layer >= config_.layers) fail("synthetic KV: layer {} outside [0, {})", layer, config_.layers);
  const KvKind factor_kind = kind == KvKind::query ? KvKind::key : kind;
  kind_params(config_, factor_kind);  // rejects attn_in
  Chain chain;
  while (chain.layer + 1 < layer) advance(sample, factor_kind, chain, nullptr);
  core::FloatTensor out;
  advance(sample, factor_kind, chain, &out);
  if (kind != KvKind::query) return out;
  return make_query(sample, layer, out, chain.model);
}

void SynthGenerator::for_each_layer(int sample, const LayerSink& sink) const {
  sample_meta(sample);
  Chain key_chain, value_chain;
  core::FloatTensor key, value;
  for (int l = 0; l < config_.layers; ++l) {
    advance(sample, KvKind::key, key_chain, &key);
    advance(sample, KvKind::value, value_chain, &value);
    const core::FloatTensor query = make_query(sample, l, key, key_chain.model);
    sink(l, key, value, query);
  }
}

std::int64_t SynthGenerator::planted_rank(KvKind kind, int group_size) const {
  if (group_size < 1) fail("synthetic KV: group size {} must be at least 1", group_size);
  const KindParams p = kind_params(config_, kind);
  const std::int64_t extra =
      p.decorated ? std::int64_t{config_.outlier_channels > 0} + std::int64_t{config_.sink_tokens > 0} : 0;
  const std::int64_t g = group_size;
  const std::int64_t per_layer = std::min<std::int64_t>(config_.width(), p.rank + extra);
  const std::int64_t shared = (p.drift > 0 ? g * p.rank : p.rank) + extra;
  return std::min({config_.tokens, g * per_layer, shared});
}

std::vector<double> SynthGenerator::planted_singular_values(KvKind kind) const {
  const KindParams p = kind_params(config_, kind);
  std::vector<double> sigma(static_cast<std::size_t>(p.rank));
  for (int k = 0; k < p.rank; ++k)
    sigma[static_cast<std::size_t>(k)] = std::sqrt(double(config_.tokens)) * p.scale * std::pow(p.decay, k);
  return sigma;
}

double SynthGenerator::expected_cka(KvKind kind, int distance) const {
  const KindParams p = kind_params(config_, kind);
  return std::pow(1 - p.drift * p.drift, std::abs(distance));
}

void write_synthetic_dump(const SynthConfig& config, const std::filesystem::path& out) {
  const SynthGenerator generator(config);
  core::DumpWriter writer(out, generator.dump_info());
  core::Progress progress("synth", std::int64_t{config.samples} * config.layers);
  for (int s = 0; s < config.samples; ++s) {
    writer.begin_sample(generator.sample_meta(s));
    generator.for_each_layer(s, [&](int layer, const core::FloatTensor& key, const core::FloatTensor& value,
                                    const core::FloatTensor& query) {
      writer.write_layer(layer, key.span(), value.span(), query.span());
      progress.advance();
    });
    writer.end_sample();
  }
  writer.commit();
}

}  // namespace kvlab::datasets
