#include "compressors/methods/palu.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>

#include "compressors/host_ops.h"
#include "compressors/methods/projection_weights.h"
#include "compressors/packed_bytes.h"
#include "core/error.h"
#include "core/safetensors.h"
#include "core/stopwatch.h"

namespace kvlab::compressors {

MethodDef palu_method() {
  MethodDef m{"palu",
              StageKind::transform,
              "Palu (arXiv 2407.21118): per block of `group` KV heads (G-LRD), a thin SVD of the checkpoint's k_proj / "
              "v_proj rows; the cache holds each token's latent (attn_in · R_jᵀ, needs --model and a dump with "
              "attn_in) and rebuilds pre-RoPE keys and values with the up projection; optional Hadamard-rotated "
              "latent quantization",
              {
                  {"ratio", ParamType::real, "0.5",
                   "param_ratio_target: fraction of each block's g·D dimensions kept as its rank, rounded to a "
                   "multiple of `block` (README's compress.py example: 0.5); ignored when rank > 0",
                   {}, 0, 1},
                  {"rank", ParamType::integer, "0",
                   "latent rank per block; 0 = from ratio (the authors' uniform allocation); capped at min(g·D, "
                   "d_model)",
                   {}, 0, 1e9},
                  {"group", ParamType::integer, "4",
                   "head_group_size: KV heads per low-rank block (compress.py: 4; 1 = per head M-LRD, H_kv = per "
                   "layer J-LRD); must divide H_kv",
                   {}, 1, 1e6},
                  {"block", ParamType::integer, "32",
                   "rank rounding of the uniform allocation (rank_search.py rounding_search_result: block_size=32)",
                   {}, 1, 1e6},
                  {"alloc", ParamType::choice, "uniform",
                   "rank allocation: uniform (the Fisher-information search of rank_search.py is not implemented)",
                   {"uniform"}},
                  {"bits", ParamType::choice, "16",
                   "latent quantization bits (utils.py --lt_bits, default 16 = none; README's example: 3)",
                   {"2", "3", "4", "8", "16"}},
                  {"qgroup", ParamType::integer, "0",
                   "latent channels per quantization group (--lt_group_size, default 0 = a block's whole latent row); "
                   "must divide the rank",
                   {}, 0, 1e9},
                  {"quant", ParamType::choice, "asym",
                   "latent quantizer: asym (min/max with a zero point; --lt_sym unset) or sym (absmax)",
                   {"asym", "sym"}},
                  {"hadamard", ParamType::choice, "on",
                   "rotate latents by the Hadamard matrix before quantizing (--lt_hadamard, as README's 3-bit example; "
                   "needs a power-of-two rank); no effect at bits=16",
                   {"on", "off"}},
              },
              {}};
  m.make_transform = make_palu;
  m.needs.attention_inputs = true;  // the latents are attn_in · R_jᵀ
  m.needs.checkpoint = true;        // R_j and L_j come from an SVD of the k_proj / v_proj rows
  return m;
}

std::int64_t palu_uniform_rank(std::int64_t group_dims, double ratio, std::int64_t block) {
  // lr_group_dims·param_ratio_target, then max(1, round(r / block_size))·block_size; std::nearbyint
  // in the default rounding mode rounds half to even, as Python's round does.
  const double r = static_cast<double>(group_dims) * ratio;
  return std::max<std::int64_t>(1, static_cast<std::int64_t>(std::nearbyint(r / static_cast<double>(block)))) * block;
}

Eigen::MatrixXf palu_hadamard(std::int64_t n) {
  if (n < 1 || (n & (n - 1)) != 0)
    fail("palu: hadamard=on needs a power-of-two rank per block, got {} (the authors' other orders, 12·2^k, 20·2^k, …, "
         "are not implemented: set rank or ratio to give a power of two, or hadamard=off)",
         n);
  Eigen::MatrixXf h = Eigen::MatrixXf::Ones(1, 1);
  while (h.rows() < n) {  // Sylvester: H_2k = [[H, H], [H, −H]]
    const auto k = h.rows();
    Eigen::MatrixXf next(2 * k, 2 * k);
    next << h, h, h, -h;
    h = std::move(next);
  }
  return h / std::sqrt(static_cast<float>(n));
}

namespace {

std::int64_t quant_group(const PaluQuant& q, std::int64_t c) { return q.group > 0 ? q.group : c; }

void check_quant(const PaluQuant& q, std::int64_t c, std::string_view what) {
  if (q.bits < 2 || q.bits > 8) fail("{}: latent bits {} outside [2, 8] (16 = not quantized)", what, q.bits);
  if (c > 0 && c % quant_group(q, c) != 0)
    fail("{}: key 'qgroup' = {} does not divide the block's rank {} (allowed: 0 or a divisor of the rank)", what,
         q.group, c);
}

}  // namespace

std::int64_t palu_quant_bytes(std::int64_t n, std::int64_t c, const PaluQuant& q) {
  const std::int64_t groups = c > 0 ? n * (c / quant_group(q, c)) : 0;
  return (n * c * q.bits + 7) / 8 + groups * (q.symmetric ? 2 : 4);
}

std::vector<std::uint8_t> palu_quant_pack(std::span<const float> x, std::int64_t n, std::int64_t c, const PaluQuant& q,
                                          std::string_view what) {
  check_quant(q, c, what);
  if (static_cast<std::int64_t>(x.size()) != n * c) fail("{}: {} values for shape [{}, {}]", what, x.size(), n, c);
  std::vector<std::uint8_t> out(static_cast<std::size_t>(palu_quant_bytes(n, c, q)), 0);
  const std::int64_t gs = quant_group(q, c), meta = (n * c * q.bits + 7) / 8, per_group = q.symmetric ? 2 : 4;
  // quant.py quantize_tensor: sym q ∈ [−2^{b−1}, 2^{b−1} − 1], asym q ∈ [0, 2^b − 1].
  const float qmax = q.symmetric ? float((1 << (q.bits - 1)) - 1) : float((1 << q.bits) - 1);
  const float qmin = q.symmetric ? -float(1 << (q.bits - 1)) : 0.f, offset = -qmin;
  for (std::int64_t e = 0, group = 0; e < n * c; e += gs, ++group) {
    const auto seg = x.subspan(static_cast<std::size_t>(e), static_cast<std::size_t>(gs));
    const auto [lo, hi] = std::minmax_element(seg.begin(), seg.end());
    float scale = 0, zero = 0;
    if (q.symmetric) {
      scale = to_fp16(std::max(std::max(std::abs(*lo), std::abs(*hi)), 1e-5f) / qmax);
    } else {
      scale = to_fp16(std::max(*hi - *lo, 1e-5f) / qmax);
      zero = std::clamp(std::nearbyint(-*lo / scale), qmin, qmax);
    }
    if (!std::isfinite(scale) || scale == 0)
      fail("{}: a quantization group's scale {} is outside fp16's range (latents beyond ±65504?)", what, scale);
    for (std::int64_t k = 0; k < gs; ++k) {
      const float v = std::clamp(std::nearbyint(seg[static_cast<std::size_t>(k)] / scale) + zero, qmin, qmax) + offset;
      put_code(out, 0, e + k, q.bits, static_cast<std::uint32_t>(v));
    }
    put_fp16(out, meta + group * per_group, scale);
    if (!q.symmetric) put_fp16(out, meta + group * per_group + 2, zero);  // an integer ≤ 255: exact at fp16
  }
  return out;
}

void palu_quant_unpack(std::span<const std::uint8_t> packed, std::int64_t n, std::int64_t c, const PaluQuant& q,
                       std::span<float> out) {
  check_quant(q, c, "palu_quant_unpack");
  if (static_cast<std::int64_t>(packed.size()) != palu_quant_bytes(n, c, q) || static_cast<std::int64_t>(out.size()) != n * c)
    fail("palu: {} bytes / {} values for a [{}, {}] latent whose packed form takes {} bytes", packed.size(), out.size(),
         n, c, palu_quant_bytes(n, c, q));
  const std::int64_t gs = quant_group(q, c), meta = (n * c * q.bits + 7) / 8, per_group = q.symmetric ? 2 : 4;
  for (std::int64_t e = 0, group = 0; e < n * c; e += gs, ++group) {
    const float scale = get_fp16(packed, meta + group * per_group);
    const float zero = q.symmetric ? float(1 << (q.bits - 1)) : get_fp16(packed, meta + group * per_group + 2);
    for (std::int64_t k = 0; k < gs; ++k)
      out[static_cast<std::size_t>(e + k)] = (float(get_code(packed, 0, e + k, q.bits)) - zero) * scale;
  }
}

namespace {

using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

std::string part_name(Part part) { return part == Part::key ? "key" : "value"; }

// What each stored tensor is, for the byte breakdown in notes().
enum class Kind { latent, factor, bias };

class PaluCompressed final : public Compressed {
 public:
  CacheShape shape;
  std::int64_t blocks = 0, block_dims = 0, rank = 0;  // per layer part: blocks of g·D rows, each of rank r
  std::vector<StoredTensor> tensors;
  std::vector<Kind> kinds;
  std::map<std::string, std::size_t> slots;
  nlohmann::json figures = nlohmann::json::object();  // set by the stage: ranks, SVD time

  void add(StoredTensor t, Kind kind) {
    slots[t.name] = tensors.size();
    tensors.push_back(std::move(t));
    kinds.push_back(kind);
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
    if (layer < 0 || layer >= shape.layers) fail("palu: layer {} outside [0, {})", layer, shape.layers);
    const std::int64_t T = shape.tokens, N = shape.width();
    LayerKV out{FloatTensor({T, shape.kv_heads, shape.head_dim}), FloatTensor({T, shape.kv_heads, shape.head_dim}), {}};
    for (const Part part : {Part::key, Part::value}) {
      Eigen::Map<RowMajor> x((part == Part::key ? out.key : out.value).data.data(), T, N);
      // From the stored values alone (decoded from the packed bytes; a chained quantizer may have changed them).
      for (std::int64_t j = 0; j < blocks; ++j) {
        const auto& c = *find(fmt::format("layer{}/{}/group{}/latent", layer, part_name(part), j));
        const auto& up = *find(fmt::format("layer{}/{}/group{}/up", layer, part_name(part), j));
        x.middleCols(j * block_dims, block_dims).noalias() =
            Eigen::Map<const RowMajor>(c.values.data(), c.shape[0], c.shape[1]) *
            Eigen::Map<const RowMajor>(up.values.data(), up.shape[0], up.shape[1]).transpose();
      }
      if (const auto* b = find(fmt::format("layer{}/{}_bias", layer, part_name(part))))
        x.rowwise() += Eigen::Map<const Eigen::RowVectorXf>(b->values.data(), N);
    }
    return out;
  }

  nlohmann::json notes() const override {
    std::int64_t by_kind[3] = {0, 0, 0};
    for (std::size_t i = 0; i < tensors.size(); ++i) by_kind[static_cast<int>(kinds[i])] += tensors[i].bytes();
    const std::int64_t latent = by_kind[0], baseline = dense_fp16_bytes(shape);
    // rank_search.py prints the cache's saving as 100 − rank_sum / total_rank · 100 over every k_proj / v_proj.
    const std::int64_t rank_sum = 2 * std::int64_t{shape.layers} * blocks * rank, total = 2 * std::int64_t{shape.layers} * shape.width();
    auto n = figures;
    n["rank_per_block"] = rank;
    n["block_dims"] = block_dims;
    n["blocks_per_layer_part"] = blocks;
    n["rank_sum"] = rank_sum;
    n["total_rank"] = total;
    n["authors_kv_compression_percent"] = total ? 100.0 - 100.0 * static_cast<double>(rank_sum) / static_cast<double>(total) : 0.0;
    n["latent_bytes"] = latent;
    n["factor_bytes"] = by_kind[1];
    n["bias_bytes"] = by_kind[2];
    n["ratio_latents_only"] = latent ? static_cast<double>(baseline) / static_cast<double>(latent) : 0.0;
    return n;
  }
};

class Palu final : public TransformStage {
 public:
  explicit Palu(const StageSpec& spec) : spec_(spec) {
    quant_.bits = static_cast<int>(spec.get_int("bits"));
    quant_.group = spec.get_int("qgroup");
    quant_.symmetric = spec.get("quant") == "sym";
  }

  std::unique_ptr<Compressed> compress(const CompressContext& ctx) const override {
    const auto& cache = ctx.cache;
    const CacheShape& s = cache.shape();
    if (!ctx.checkpoint)
      fail("palu needs the model's weights (k_proj, v_proj of every layer): pass the model directory (--model)");
    const auto& ckpt = *ctx.checkpoint;
    const std::int64_t g = spec_.get_int("group"), T = s.tokens, N = s.width();
    if (s.kv_heads % g != 0)
      fail("palu: key 'group' = {} does not divide the {} KV heads of {} (allowed: a divisor of H_kv)", g, s.kv_heads,
           cache.describe());
    auto out = std::make_unique<PaluCompressed>();
    out->shape = s;
    out->blocks = s.kv_heads / g;
    out->block_dims = g * s.head_dim;
    const std::int64_t bd = out->block_dims, blocks = out->blocks;
    const bool quantize = quant_.bits < 16, rotate = quantize && spec_.get("hadamard") == "on";
    double svd_seconds = 0;
    const std::int64_t requested = spec_.get_int("rank") > 0
                                       ? spec_.get_int("rank")
                                       : palu_uniform_rank(bd, spec_.get_real("ratio"), spec_.get_int("block"));
    for (int l = 0; l < s.layers; ++l) {
      const int model_layer = cache.model_layer(l);
      const std::int64_t d_model = projection_d_model(ckpt, model_layer, "k_proj");
      const std::int64_t r = std::min({requested, bd, std::max<std::int64_t>(d_model, 1)});
      out->rank = r;
      const Eigen::MatrixXf hadamard = rotate ? palu_hadamard(r) : Eigen::MatrixXf();
      // Every block's down projection R_j, keys' blocks then values', stacked [2·blocks·r, d_model]:
      // one GEMM forms all of the layer's latents.
      const auto t0 = std::chrono::steady_clock::now();
      HostOps::Tensor32 down(2 * blocks * r, d_model);
      std::vector<RowMajor> ups;
      for (const Part part : {Part::key, Part::value}) {
        const char* proj = part == Part::key ? "k_proj" : "v_proj";
        const auto w = load_weight(ckpt, "palu", projection_name(model_layer, proj, "weight"), {N, d_model},
                                   "[H_kv·D, d_model] of the dumped cache");
        for (std::int64_t j = 0; j < blocks; ++j) {
          auto [up, r_j] = block_factors(w.data.data() + j * bd * d_model, bd, d_model, r, ctx.backend);
          if (rotate) {  // svd_linear.py fused_hadamard_matrix: VT_j ← H·VT_j, U_j ← U_j·H (H symmetric)
            r_j = hadamard * r_j;
            up = up * hadamard;
          }
          down.middleRows(((part == Part::key ? 0 : blocks) + j) * r, r) = r_j.array();
          ups.push_back(std::move(up));
        }
        if (const auto b = projection_bias(ckpt, "palu", model_layer, proj, N))
          out->add(StoredTensor::fp16(fmt::format("layer{}/{}_bias", l, part_name(part)), {1, N}, b->data,
                                      QuantLayout::none, false),
                   Kind::bias);
      }
      svd_seconds += core::seconds_since(t0);
      const auto h = cache.attn_in(l);
      if (h.shape != core::Shape{T, d_model})
        fail("palu: {}: attn_in of layer {} has shape [{}], expected [{}, {}] (d_model of the checkpoint's k_proj)",
             cache.describe(), l, fmt::join(h.shape, ", "), T, d_model);
      const HostOps::Tensor32 latents =
          HostOps::matmul_t(Eigen::Map<const HostOps::Tensor32>(h.data.data(), T, d_model), down, ctx.backend);
      for (const Part part : {Part::key, Part::value})
        for (std::int64_t j = 0; j < blocks; ++j) {
          const std::int64_t slot = (part == Part::key ? 0 : blocks) + j;
          const auto prefix = fmt::format("layer{}/{}/group{}/", l, part_name(part), j);
          const HostOps::Tensor32 c = latents.middleCols(slot * r, r);
          out->add(quantize ? quantized_latent(prefix + "latent", c, rotate)
                            : StoredTensor::fp16(prefix + "latent", {T, r}, {c.data(), c.data() + c.size()},
                                                 QuantLayout::per_token, true),
                   Kind::latent);
          const RowMajor& up = ups[static_cast<std::size_t>(slot)];
          out->add(StoredTensor::fp16(prefix + "up", {bd, r}, {up.data(), up.data() + up.size()}, QuantLayout::none, false),
                   Kind::factor);
        }
    }
    out->figures = {{"requested_rank", requested},
                    {"weight_svd_seconds", svd_seconds},
                    {"hadamard", rotate},
                    {"latent_format", quantize ? latent_format(rotate) : "fp16"}};
    return out;
  }

 private:
  // One block's factors from its rows W_j [rows, d_model] (row-major at `w`), by a thin SVD in f32
  // as _per_head_decomposition_from_weight (svd_linear.py): L = U_r·√S_r [rows, r] and
  // R = √S_r·V_rᵀ [r, d_model]. W_j row-major is W_jᵀ column-major, whose SVD V·S·Uᵀ gives both.
  static std::pair<RowMajor, RowMajor> block_factors(const float* w, std::int64_t rows, std::int64_t d_model,
                                                     std::int64_t r, linalg::Backend& backend) {
    const std::int64_t k = std::min(rows, d_model);
    std::vector<float> a(w, w + rows * d_model), sigma(static_cast<std::size_t>(k)),
        u(static_cast<std::size_t>(d_model * k)), vt(static_cast<std::size_t>(k * rows));
    backend.svd_thin(a.data(), d_model, rows, d_model, sigma.data(), u.data(), d_model, vt.data(), k);
    RowMajor up(rows, r), down(r, d_model);
    for (std::int64_t j = 0; j < r; ++j) {
      const float root = std::sqrt(sigma[static_cast<std::size_t>(j)]);
      for (std::int64_t i = 0; i < rows; ++i) up(i, j) = vt[static_cast<std::size_t>(j + i * k)] * root;
      for (std::int64_t c = 0; c < d_model; ++c) down(j, c) = root * u[static_cast<std::size_t>(c + j * d_model)];
    }
    return {std::move(up), std::move(down)};
  }

  std::string latent_format(bool rotate) const {
    return fmt::format("palu{} g{} {}{}", quant_.bits, quant_.group, quant_.symmetric ? "sym" : "asym",
                       rotate ? " hadamard" : "");
  }

  // A latent [T, r] rounded to fp16 (the authors' model runs in fp16) and quantized once: packed
  // codes, values decoded from them; layout none, so no later quantizer touches it.
  StoredTensor quantized_latent(std::string name, const HostOps::Tensor32& c, bool rotate) const {
    std::vector<float> x(static_cast<std::size_t>(c.size()));
    for (Eigen::Index i = 0; i < c.size(); ++i) x[static_cast<std::size_t>(i)] = to_fp16(c.data()[i]);
    StoredTensor t;
    t.packed = palu_quant_pack(x, c.rows(), c.cols(), quant_, fmt::format("palu: stored tensor {}", name));
    palu_quant_unpack(t.packed, c.rows(), c.cols(), quant_, x);
    t.name = std::move(name);
    t.shape = {c.rows(), c.cols()};
    t.values = std::move(x);
    t.layout = QuantLayout::none;
    t.token_rows = true;
    t.format = latent_format(rotate);
    return t;
  }

  StageSpec spec_;
  PaluQuant quant_;
};

}  // namespace

std::unique_ptr<TransformStage> make_palu(const StageSpec& spec) { return std::make_unique<Palu>(spec); }

}  // namespace kvlab::compressors
