#include "compressors/methods/commonkv.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <optional>

#include "compressors/dense.h"
#include "compressors/host_ops.h"
#include "compressors/methods/commonkv_kernel.h"
#include "compressors/methods/projection_weights.h"
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
              {"leftover", ParamType::choice, "dense",
               "the L mod g layers after the last full group: dense (default) = stored as the cache holds them "
               "(fp16, keys post-RoPE), never merged; svd = the authors' run_longbench.py: a weight SVD over the "
               "shortened last group (same rank key), every token's latent stored, never merged (merge_all_kv "
               "takes L // g groups)",
               {"dense", "svd"}},
          },
          {}};
  m.make_transform = make_commonkv;
  m.needs.attention_inputs = true;  // the latents are attn_in · P
  m.needs.checkpoint = true;        // P comes from an SVD of the stacked W_k/W_v
  m.device = DevicePath::commonkv;
  return m;
}

namespace {

// Row-major f32 values as a [rows, cols] matrix.
HostOps::Tensor32 matrix(const std::vector<float>& v, std::int64_t rows, std::int64_t cols) {
  return Eigen::Map<const HostOps::Tensor32>(v.data(), rows, cols);
}

// What each stored tensor is, for the byte breakdown in notes().
enum class Kind { latent, factor, index, dense };

class CommonKVCompressed final : public Compressed {
 public:
  CacheShape shape;
  std::vector<core::Rope> ropes;  // [L]
  std::vector<std::int64_t> positions;
  int g = 0, groups = 0;  // layers 0 … groups·g − 1 are merged in groups of g
  bool leftover_svd = false;  // the rest: a shortened SVD group never merged, else dense
  std::vector<StoredTensor> tensors;
  std::vector<Kind> kinds;
  std::map<std::string, std::size_t> slots;  // every tensor's slot, by name
  std::int64_t budget = 0;   // int(keep·N): pairs left unmerged by similarity
  std::int64_t requested_rank = 0;

  void add(StoredTensor t, Kind kind) {
    slots[t.name] = tensors.size();
    tensors.push_back(std::move(t));
    kinds.push_back(kind);
  }
  void add(CommonkvStored<HostOps>&& s) {
    const auto& v = s.values;
    if (s.role == CommonkvRole::index)
      add(StoredTensor::indices(std::move(s.name), s.index), Kind::index);
    else
      add(StoredTensor::fp16(std::move(s.name), {v.rows(), v.cols()}, {v.data(), v.data() + v.size()},
                             s.role == CommonkvRole::bias ? QuantLayout::none : QuantLayout::per_token,
                             s.role == CommonkvRole::latent),
          s.role == CommonkvRole::latent ? Kind::latent : Kind::factor);  // biases are weights too
  }
  const StoredTensor* find(const std::string& name) const {
    const auto it = slots.find(name);
    return it == slots.end() ? nullptr : &tensors[it->second];
  }

  std::vector<StoredTensor*> stored() override {
    std::vector<StoredTensor*> out;
    for (auto& t : tensors) out.push_back(&t);
    return out;
  }

  LayerKV reconstruct(int layer) const override {
    if (layer < 0 || layer >= shape.layers) fail("commonkv: layer {} outside [0, {})", layer, shape.layers);
    const std::int64_t T = shape.tokens;
    LayerKV out{FloatTensor({T, shape.kv_heads, shape.head_dim}), FloatTensor({T, shape.kv_heads, shape.head_dim}), {}};
    for (auto [part, dst] : {std::pair{Part::key, &out.key}, {Part::value, &out.value}}) {
      if (layer >= groups * g && !leftover_svd) {  // leftover: stored dense
        *dst = rebuild_uncompressed(*find(fmt::format("layer{}/{}", layer, to_string(part))), part, shape, ropes[static_cast<std::size_t>(layer)], positions);
        continue;
      }
      // From the stored tensors alone (a quantizer may have changed them).
      const auto get = [&](const std::string& name) {
        const StoredTensor* t = find(name);
        return t ? std::optional(matrix(t->values, t->shape[0], t->shape[1])) : std::nullopt;
      };
      const auto index = find(fmt::format("group{}/merged_index", layer / g))->unpack_indices();
      const HostOps::Tensor32 x = commonkv_rebuild<HostOps>(layer, g, to_string(part), T, index, get);
      std::copy_n(x.data(), x.size(), dst->data.data());
    }
    return out;
  }

  nlohmann::json notes() const override {
    std::int64_t by_kind[4] = {0, 0, 0, 0};
    for (std::size_t i = 0; i < tensors.size(); ++i) by_kind[static_cast<int>(kinds[i])] += tensors[i].bytes();
    const std::int64_t latent = by_kind[0], factor = by_kind[1], index = by_kind[2], dense = by_kind[3];
    std::int64_t merged = 0;
    nlohmann::json per_group = nlohmann::json::array();
    std::vector<int> dense_layers, leftover_layers;
    for (int l = groups * g; l < shape.layers; ++l) (leftover_svd ? leftover_layers : dense_layers).push_back(l);
    for (int gi = 0; gi < groups; ++gi) {
      const std::int64_t m = find(fmt::format("group{}/merged_index", gi))->shape[0];
      merged += m;
      std::vector<int> layers(static_cast<std::size_t>(g));
      std::iota(layers.begin(), layers.end(), gi * g);
      per_group.push_back({{"layers", layers}, {"rank", find(fmt::format("group{}/P", gi))->shape[0]},
                           {"merged_tokens", m}, {"unmerged_tokens", shape.tokens - m}});
    }
    const std::int64_t pairs = std::int64_t{groups} * shape.tokens;
    const std::int64_t without_factors = latent + index + dense;
    const auto baseline = dense_fp16_bytes(shape);
    return {{"merged_fraction", pairs ? static_cast<double>(merged) / static_cast<double>(pairs) : 0.0},
            {"merged_pairs", merged},
            {"pairs", pairs},
            {"no_merge_budget", budget},
            {"requested_rank", requested_rank},
            {"groups", per_group},
            {"dense_layers", dense_layers},
            {"leftover", leftover_svd ? "svd: a shortened SVD group, never merged" : "dense"},
            {"leftover_svd_layers", leftover_layers},
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

class CommonKV final : public TransformStage {
 public:
  explicit CommonKV(const StageSpec& spec) : spec_(spec) {}

  std::unique_ptr<Compressed> compress(const CompressContext& ctx) const override {
    const auto& cache = ctx.cache;
    auto out = std::make_unique<CommonKVCompressed>();
    out->shape = cache.shape();
    out->ropes = layer_ropes(cache);
    out->positions = cache.positions();
    out->requested_rank = spec_.get_int("rank");
    // c = h·Pᵀ for every token of `layer`: [T, r], from attn_in [T, d_model] and P [r, d_model].
    const auto latents = [&](int layer, const HostOps::Tensor32& p) {
      const auto h = cache.attn_in(layer);
      const std::int64_t T = out->shape.tokens, d_model = p.cols();
      if (h.shape != core::Shape{T, d_model})
        fail("commonkv: {}: attn_in of layer {} has shape [{}], expected [{}, {}] (d_model of the checkpoint's "
             "k_proj)", cache.describe(), layer, fmt::join(h.shape, ", "), T, d_model);
      return HostOps::matmul_t(matrix(h.data, T, d_model), p, ctx.backend);
    };
    out->budget = commonkv_stage<HostOps>(spec_, ctx.checkpoint, out->shape, cache.describe(), ctx.backend, latents,
                                          matrix, [&](CommonkvStored<HostOps>&& s) { out->add(std::move(s)); });
    out->g = static_cast<int>(spec_.get_int("g"));
    out->groups = out->shape.layers / out->g;
    out->leftover_svd = spec_.get("leftover") == "svd";
    // Leftover layers (never merged, as the code's merge): with leftover=svd the kernel stored them
    // as a shortened group; else dense, as the model's cache holds them.
    for (int l = out->groups * out->g; l < out->shape.layers && !out->leftover_svd; ++l)
      for (const Part part : {Part::key, Part::value}) out->add(store_uncompressed(cache, l, part), Kind::dense);
    return out;
  }

 private:
  StageSpec spec_;
};

}  // namespace

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
      if (f.d_model == 0) f.d_model = projection_d_model(ckpt, l, proj);
      const auto w = load_weight(ckpt, "commonkv", projection_name(l, proj, "weight"), {N, f.d_model},
                                 "[H_kv·D, d_model] of the dumped cache");
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
      const auto bias = projection_bias(ckpt, "commonkv", layers[i], part ? "v_proj" : "k_proj", N);
      (part ? f.value_bias : f.key_bias).push_back(bias ? bias->data : std::vector<float>{});
    }
  return f;
}

std::unique_ptr<TransformStage> make_commonkv(const StageSpec& spec) { return std::make_unique<CommonKV>(spec); }

}  // namespace kvlab::compressors
