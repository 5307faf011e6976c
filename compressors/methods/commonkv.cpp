#include "compressors/methods/commonkv.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "compressors/dense.h"
#include "core/error.h"
#include "core/safetensors.h"

namespace kvlab::compressors {

MethodDef commonkv_method() {
  MethodDef m{"commonkv",
          StageKind::transform,
          "CommonKV (arXiv 2508.16134): a shared latent per group of g layers from a thin SVD of the stacked "
          "W_k/W_v weights (needs --model and a dump with attn_in), then cross-layer merging of the latents whose "
          "first/last-layer cosine is highest, with a global no-merge budget",
          {
              {"g", ParamType::integer, "4",
               "layer_step: adjacent layers sharing one weight SVD and one merge group (authors' scripts: 4); the "
               "L mod g leftover layers are stored dense",
               {}, 1, 1e6},
              {"rank", ParamType::integer, "0",
               "latent rank per group; 0 = H_kv·D (the Seqaeon fork: keep ≤ num_key_value_heads·head_dim to avoid "
               "expansion); the authors use per-layer Palu-searched ranks (Llama-3.1-8B: 4096…2112); capped at "
               "min(2·g·H_kv·D, d_model)",
               {}, 0, 1e9},
              {"keep", ParamType::real, "0.4",
               "fraction of all (group, token) pairs left unmerged, least similar first (hard-coded 0.4 in the code)",
               {}, 0, 1},
              {"sinks", ParamType::integer, "4", "first tokens never merged (code: 4)", {}, 0, 1e12},
              {"recent", ParamType::integer, "128", "last tokens never merged (code: 128)", {}, 0, 1e12},
              {"weights", ParamType::choice, "uniform",
               "merge weights over a group's layers: uniform (the authors hard-code Llama-3.1-8B ΔPPL sensitivity "
               "weights for L = 32, g = 4, not reproduced here)",
               {"uniform"}},
              {"pair", ParamType::choice, "first_last",
               "layers whose latent cosine ranks the tokens: first_last (first vs last layer of the group, as the "
               "code)",
               {"first_last"}},
          },
          {}};
  m.make_transform = make_commonkv;
  m.needs.attention_inputs = true;  // the latents are attn_in · P
  m.needs.checkpoint = true;        // P comes from an SVD of the stacked W_k/W_v
  m.device = DevicePath::commonkv;
  return m;
}

namespace {

// What each stored tensor is, for the byte breakdown in notes().
enum class Kind { latent, factor, index, dense };

struct Group {
  std::vector<int> layers;
  std::int64_t rank = 0;
  std::vector<std::uint8_t> merged;       // [T], 1 = the token's latent is the group's merged one (while compressing)
  std::int64_t merged_count = 0;
  std::ptrdiff_t p_slot = -1, merged_slot = -1, index_slot = -1;  // index: the merged tokens, int32 ascending
};

struct LayerSlots {
  int group = -1;  // −1: a dense leftover layer
  std::ptrdiff_t latent = -1, d_key = -1, d_value = -1, key_bias = -1, value_bias = -1;
  std::ptrdiff_t dense = -1;  // leftover layer: key slot (value slot = +1)
};

class CommonKVCompressed final : public Compressed {
 public:
  CacheShape shape;
  core::Rope rope;
  std::vector<std::int64_t> positions;
  std::vector<Group> groups;
  std::vector<LayerSlots> layers;
  std::vector<StoredTensor> tensors;
  std::vector<Kind> kinds;
  std::int64_t budget = 0;   // int(keep·N): pairs left unmerged by similarity
  std::int64_t requested_rank = 0;

  std::ptrdiff_t add(StoredTensor t, Kind kind) {
    tensors.push_back(std::move(t));
    kinds.push_back(kind);
    return static_cast<std::ptrdiff_t>(tensors.size()) - 1;
  }

  std::vector<StoredTensor*> stored() override {
    std::vector<StoredTensor*> out;
    for (auto& t : tensors) out.push_back(&t);
    return out;
  }

  LayerKV reconstruct(int layer) const override {
    if (layer < 0 || layer >= shape.layers) fail("commonkv: layer {} outside [0, {})", layer, shape.layers);
    const std::int64_t T = shape.tokens, N = shape.width();
    const int H = shape.kv_heads, Dh = shape.head_dim;
    LayerKV out{FloatTensor({T, H, Dh}), FloatTensor({T, H, Dh}), {}};
    const auto& s = layers[layer];
    if (s.group < 0) {
      out.key = rebuild_uncompressed(tensors[s.dense], Part::key, shape, rope, positions);
      out.value = rebuild_uncompressed(tensors[s.dense + 1], Part::value, shape, rope, positions);
      return out;
    }
    // The layer's latents [T, r] from the stored tensors alone (a quantizer may have changed them).
    const Group& g = groups[s.group];
    const std::int64_t r = g.rank;
    std::vector<float> c(static_cast<std::size_t>(T * r));
    const auto merged = tensors[g.index_slot].unpack_indices();  // the stored form says which tokens merged
    std::int64_t u = 0;
    std::size_t m = 0;
    for (std::int64_t t = 0; t < T; ++t) {
      const bool is_merged = m < merged.size() && merged[m] == t;
      const float* src = is_merged ? tensors[g.merged_slot].values.data() + static_cast<std::int64_t>(m++) * r
                                   : tensors[s.latent].values.data() + (u++) * r;
      std::copy_n(src, r, c.data() + t * r);
    }
    // x = c·Dᵀ (+ b), [T, N]. Column-major: xᵀ (N×T) = (Dᵀ)ᵀ·cᵀ with Dᵀ (r×N, ld r) and cᵀ (r×T,
    // ld r) as they lie. The process-wide CPU backend: reconstruction holds no CompressContext.
    const auto part = [&](std::ptrdiff_t d_slot, std::ptrdiff_t bias_slot, FloatTensor& dst) {
      if (T > 0 && r > 0)
        linalg::cpu_backend().gemm(true, false, N, T, r, 1.f, tensors[d_slot].values.data(), r, c.data(), r, 0.f,
                                   dst.data.data(), N);
      if (bias_slot < 0) return;
      const auto& b = tensors[bias_slot].values;
      for (std::int64_t t = 0; t < T; ++t)
        for (std::int64_t i = 0; i < N; ++i) dst.data[t * N + i] += b[i];
    };
    part(s.d_key, s.key_bias, out.key);
    part(s.d_value, s.value_bias, out.value);
    return out;
  }

  nlohmann::json notes() const override {
    std::int64_t by_kind[4] = {0, 0, 0, 0};
    for (std::size_t i = 0; i < tensors.size(); ++i) by_kind[static_cast<int>(kinds[i])] += tensors[i].bytes();
    const std::int64_t latent = by_kind[0], factor = by_kind[1], index = by_kind[2], dense = by_kind[3];
    std::int64_t merged = 0;
    nlohmann::json per_group = nlohmann::json::array();
    for (const auto& g : groups) {
      merged += g.merged_count;
      per_group.push_back({{"layers", g.layers},
                           {"rank", g.rank},
                           {"merged_tokens", g.merged_count},
                           {"unmerged_tokens", shape.tokens - g.merged_count}});
    }
    std::vector<int> dense_layers;
    for (int l = 0; l < shape.layers; ++l)
      if (layers[l].group < 0) dense_layers.push_back(l);
    const std::int64_t pairs = static_cast<std::int64_t>(groups.size()) * shape.tokens;
    const std::int64_t without_factors = latent + index + dense;
    const auto baseline = dense_fp16_bytes(shape);
    return {{"merged_fraction", pairs ? static_cast<double>(merged) / static_cast<double>(pairs) : 0.0},
            {"merged_pairs", merged},
            {"pairs", pairs},
            {"no_merge_budget", budget},
            {"requested_rank", requested_rank},
            {"groups", per_group},
            {"dense_layers", dense_layers},
            {"latent_bytes", latent},
            {"factor_bytes", factor},
            {"index_bytes", index},
            {"dense_layer_bytes", dense},
            {"bytes_without_factors", without_factors},
            {"ratio_without_factors",
             without_factors ? static_cast<double>(baseline) / static_cast<double>(without_factors) : 0.0},
            // The released code keeps identical K and V latent caches: twice the latent bytes.
            {"authors_latent_bytes_kv_twice", 2 * latent}};
  }
};

// One layer's weight from the checkpoint, checked against the shape the cache implies.
FloatTensor load_weight(const core::Checkpoint& ckpt, const std::string& name, const core::Shape& expected,
                        const std::string& meaning) {
  if (!ckpt.has(name)) fail("commonkv: {} has no tensor '{}'", ckpt.path().string(), name);
  if (ckpt.shape(name) != expected)
    fail("commonkv: {}: tensor '{}' has shape [{}], expected [{}] ({})", ckpt.path().string(), name,
         fmt::join(ckpt.shape(name), ", "), fmt::join(expected, ", "), meaning);
  return ckpt.tensor(name);
}

class CommonKV final : public TransformStage {
 public:
  explicit CommonKV(const StageSpec& spec)
      : g_(static_cast<int>(spec.get_int("g"))), rank_(spec.get_int("rank")), keep_(spec.get_real("keep")),
        sinks_(spec.get_int("sinks")), recent_(spec.get_int("recent")) {}

  std::unique_ptr<Compressed> compress(const CompressContext& ctx) const override {
    if (!ctx.checkpoint)
      fail("commonkv needs the model's weights (W_k, W_v of every layer): pass the model directory "
           "(kvlab compress --model DIR)");
    const auto& ckpt = *ctx.checkpoint;
    const auto& cache = ctx.cache;
    const CacheShape& shape = cache.shape();
    const int L = shape.layers, G = g_;
    const std::int64_t T = shape.tokens, N = shape.width();
    const auto group_layers = commonkv_groups(G, L, cache.describe());
    // Leftover layers are never grouped (as the code's merge).
    const int num_groups = static_cast<int>(group_layers.size());

    auto out = std::make_unique<CommonKVCompressed>();
    out->shape = shape;
    out->rope = cache.rope();
    out->positions = cache.positions();
    out->layers.resize(static_cast<std::size_t>(L));
    out->requested_rank = rank_;

    // Pass 1, per group: weight SVD → factors; latents of the first and last layer → similarity.
    std::int64_t d_model = 0;
    std::vector<double> similarity(static_cast<std::size_t>(num_groups * T));
    for (int gi = 0; gi < num_groups; ++gi) {
      Group group;
      group.layers = group_layers[gi];
      auto f = commonkv_factors(ckpt, group.layers, N, rank_, ctx.backend);
      d_model = f.d_model;
      const std::int64_t r = f.rank;
      group.rank = r;
      group.p_slot = out->add(
          StoredTensor::fp16(fmt::format("group{}/P", gi), {r, d_model}, std::move(f.p), QuantLayout::per_token, false),
          Kind::factor);
      for (int i = 0; i < G; ++i) {
        const int l = group.layers[i];
        auto& slots = out->layers[l];
        slots.group = gi;
        for (int part = 0; part < 2; ++part) {
          auto& d = part ? f.d_value[i] : f.d_key[i];
          (part ? slots.d_value : slots.d_key) = out->add(
              StoredTensor::fp16(fmt::format("layer{}/D_{}", l, part ? "value" : "key"), {N, r}, std::move(d),
                                 QuantLayout::per_token, false),
              Kind::factor);
          auto& b = part ? f.value_bias[i] : f.key_bias[i];
          // Biases are weights too: counted with the factors, never quantized.
          if (!b.empty())
            (part ? slots.value_bias : slots.key_bias) =
                out->add(StoredTensor::fp16(fmt::format("layer{}/{}_bias", l, part ? "value" : "key"), {1, N},
                                            std::move(b), QuantLayout::none, false),
                         Kind::factor);
        }
      }
      const auto& pw = out->tensors[group.p_slot].values;
      const auto first = latents(ctx, group.layers.front(), pw, r, d_model);
      const auto last = latents(ctx, group.layers.back(), pw, r, d_model);
      for (std::int64_t t = 0; t < T; ++t) {
        double dot = 0, na = 0, nb = 0;
        for (std::int64_t j = 0; j < r; ++j) {
          const double x = first[t * r + j], y = last[t * r + j];
          dot += x * y;
          na += x * x;
          nb += y * y;
        }
        similarity[static_cast<std::size_t>(gi * T + t)] = dot / std::max(std::sqrt(na * nb), 1e-8);  // torch's eps
      }
      out->groups.push_back(std::move(group));
    }

    auto merged_tokens = commonkv_merged(similarity, num_groups, T, keep_, sinks_, recent_, &out->budget);
    for (int gi = 0; gi < num_groups; ++gi) out->groups[gi].merged = std::move(merged_tokens[gi]);

    // Pass 2, per group: every layer's latents; unmerged rows per layer, merged rows once per group.
    for (int gi = 0; gi < num_groups; ++gi) {
      auto& group = out->groups[gi];
      const std::int64_t r = group.rank;
      group.merged_count = std::count(group.merged.begin(), group.merged.end(), std::uint8_t{1});
      const std::int64_t M = group.merged_count, U = T - M;
      std::vector<float> merged(static_cast<std::size_t>(M * r), 0.f);
      const float weight = 1.f / static_cast<float>(G);  // weights=uniform
      for (int l : group.layers) {
        const auto c = latents(ctx, l, out->tensors[group.p_slot].values, r, d_model);
        std::vector<float> kept(static_cast<std::size_t>(U * r));
        std::int64_t ui = 0, mi = 0;
        for (std::int64_t t = 0; t < T; ++t) {
          const float* src = c.data() + t * r;
          if (group.merged[t]) {
            float* dst = merged.data() + (mi++) * r;
            for (std::int64_t j = 0; j < r; ++j) dst[j] += weight * src[j];
          } else {
            std::copy_n(src, r, kept.data() + (ui++) * r);
          }
        }
        out->layers[l].latent = out->add(StoredTensor::fp16(fmt::format("layer{}/latent", l), {U, r}, std::move(kept),
                                                            QuantLayout::per_token, true),
                                         Kind::latent);
      }
      group.merged_slot = out->add(StoredTensor::fp16(fmt::format("group{}/merged_latent", gi), {M, r},
                                                      std::move(merged), QuantLayout::per_token, true),
                                   Kind::latent);
      std::vector<std::int32_t> merged_index;
      for (std::int64_t t = 0; t < T; ++t)
        if (group.merged[t]) merged_index.push_back(static_cast<std::int32_t>(t));
      group.index_slot =
          out->add(StoredTensor::indices(fmt::format("group{}/merged_index", gi), merged_index), Kind::index);
    }

    // Leftover layers: dense, as the model's cache holds them.
    for (int l = num_groups * G; l < L; ++l) {
      out->layers[l].dense = out->add(store_uncompressed(cache, l, Part::key), Kind::dense);
      out->add(store_uncompressed(cache, l, Part::value), Kind::dense);
    }
    return out;
  }

 private:
  // c = h·Pᵀ for every token of `layer`: [T, r] row-major, from attn_in [T, d_model].
  static std::vector<float> latents(const CompressContext& ctx, int layer, const std::vector<float>& p, std::int64_t r,
                                    std::int64_t d_model) {
    const auto h = ctx.cache.attn_in(layer);
    const std::int64_t T = ctx.cache.shape().tokens;
    if (h.shape != core::Shape{T, d_model})
      fail("commonkv: {}: attn_in of layer {} has shape [{}], expected [{}, {}] (d_model of the checkpoint's k_proj)",
           ctx.cache.describe(), layer, fmt::join(h.shape, ", "), T, d_model);
    std::vector<float> c(static_cast<std::size_t>(T * r));
    if (T == 0 || r == 0) return c;
    // Column-major: cᵀ (r×T) = (Pᵀ)ᵀ·hᵀ, with Pᵀ (d×r, ld d) and hᵀ (d×T, ld d) as they lie.
    ctx.backend.gemm(true, false, r, T, d_model, 1.f, p.data(), d_model, h.data.data(), d_model, 0.f, c.data(), r);
    return c;
  }

  int g_;
  std::int64_t rank_;
  double keep_;
  std::int64_t sinks_, recent_;
};

}  // namespace

std::vector<std::vector<int>> commonkv_groups(std::int64_t g, int layers, std::string_view where) {
  if (g < 1 || g > layers) fail("commonkv: key 'g' = {} exceeds the {} layers of {}", g, layers, where);
  std::vector<std::vector<int>> groups(static_cast<std::size_t>(layers / g));
  for (std::size_t i = 0; i < groups.size(); ++i)
    for (std::int64_t j = 0; j < g; ++j) groups[i].push_back(static_cast<int>(static_cast<std::int64_t>(i) * g + j));
  return groups;
}

CommonKvFactors commonkv_factors(const core::Checkpoint& ckpt, const std::vector<int>& layers, std::int64_t width,
                                 std::int64_t rank, linalg::Backend& backend) {
  const auto G = static_cast<std::int64_t>(layers.size());
  const std::int64_t N = width, m = 2 * G * N;
  CommonKvFactors f;
  // Stacked weights, column-major m × d_model (the layout LAPACK wants), in f32 as the authors.
  // Row block b (k of each layer, then v of each layer) holds one [N, d_model] weight.
  std::vector<float> a;
  std::int64_t block = 0;
  for (const char* proj : {"k_proj", "v_proj"})
    for (int l : layers) {
      const auto name = fmt::format("model.layers.{}.self_attn.{}.weight", l, proj);
      if (f.d_model == 0 && ckpt.has(name) && ckpt.shape(name).size() == 2) f.d_model = ckpt.shape(name)[1];
      const auto w = load_weight(ckpt, name, {N, f.d_model}, "[H_kv·D, d_model] of the dumped cache");
      a.resize(static_cast<std::size_t>(m * f.d_model));
      for (std::int64_t i = 0; i < N; ++i)
        for (std::int64_t j = 0; j < f.d_model; ++j) a[j * m + block * N + i] = w.data[i * f.d_model + j];
      ++block;
    }
  const std::int64_t d_model = f.d_model, k = std::min(m, d_model);
  std::vector<float> sigma(static_cast<std::size_t>(k)), u(static_cast<std::size_t>(m * k)),
      vt(static_cast<std::size_t>(k * d_model));
  backend.svd_thin(a.data(), m, d_model, m, sigma.data(), u.data(), m, vt.data(), k);
  const std::int64_t r = std::min<std::int64_t>(rank == 0 ? N : rank, k);
  f.rank = r;
  // P = diag(√S_r)·V_rᵀ [r, d_model]; U_r·diag(√S_r) split into D_K,l / D_V,l [N, r].
  f.p.resize(static_cast<std::size_t>(r * d_model));
  for (std::int64_t j = 0; j < r; ++j)
    for (std::int64_t c = 0; c < d_model; ++c)
      f.p[j * d_model + c] = static_cast<float>(std::sqrt(sigma[j]) * vt[j + c * k]);
  for (std::int64_t i = 0; i < G; ++i)
    for (int part = 0; part < 2; ++part) {
      const std::int64_t row0 = (part * G + i) * N;
      std::vector<float> d(static_cast<std::size_t>(N * r));
      for (std::int64_t row = 0; row < N; ++row)
        for (std::int64_t j = 0; j < r; ++j) d[row * r + j] = static_cast<float>(u[(row0 + row) + j * m] * std::sqrt(sigma[j]));
      (part ? f.d_value : f.d_key).push_back(std::move(d));
      const auto bias = fmt::format("model.layers.{}.self_attn.{}.bias", layers[i], part ? "v_proj" : "k_proj");
      (part ? f.value_bias : f.key_bias).push_back(ckpt.has(bias) ? load_weight(ckpt, bias, {N}, "[H_kv·D]").data
                                                                   : std::vector<float>{});
    }
  return f;
}

std::vector<std::vector<std::uint8_t>> commonkv_merged(const std::vector<double>& similarity, int groups,
                                                       std::int64_t tokens, double keep, std::int64_t sinks,
                                                       std::int64_t recent, std::int64_t* budget) {
  const std::int64_t T = tokens;
  const auto pairs = static_cast<std::int64_t>(similarity.size());
  if (pairs != groups * T) fail("commonkv: {} similarities for {} groups of {} tokens", pairs, groups, T);
  // The global no-merge budget: the int(keep·pairs) least similar (group, token) pairs of all
  // groups stay unmerged (ties: earlier group/token first), plus sinks and the recent window.
  const auto b = std::min(pairs, static_cast<std::int64_t>(keep * static_cast<double>(pairs)));
  if (budget) *budget = b;
  std::vector<std::int64_t> order(static_cast<std::size_t>(pairs));
  std::iota(order.begin(), order.end(), std::int64_t{0});
  std::sort(order.begin(), order.end(), [&](std::int64_t x, std::int64_t y) {
    return std::pair(similarity[x], x) < std::pair(similarity[y], y);
  });
  std::vector<std::vector<std::uint8_t>> merged(static_cast<std::size_t>(groups),
                                                std::vector<std::uint8_t>(static_cast<std::size_t>(T), 1));
  for (std::int64_t i = 0; i < b; ++i) merged[order[i] / T][order[i] % T] = 0;
  for (auto& group : merged)
    for (std::int64_t t = 0; t < T; ++t)
      if (t < sinks || t >= T - recent) group[t] = 0;
  return merged;
}

std::unique_ptr<TransformStage> make_commonkv(const StageSpec& spec) { return std::make_unique<CommonKV>(spec); }

}  // namespace kvlab::compressors
