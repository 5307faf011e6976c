#include "compressors/methods/minicache.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>

#include "compressors/dense.h"
#include "compressors/host_ops.h"
#include "compressors/methods/minicache_kernel.h"
#include "core/error.h"

namespace kvlab::compressors {

MethodDef minicache_method() {
  MethodDef m;
  m.name = "minicache";
  m.kind = StageKind::transform;
  m.help =
      "MiniCache: SLERP-merge adjacent layer pairs (start, start+1), … of [start, end] per (token, KV head) row, "
      "keys pre-RoPE; store one direction and both magnitudes per merged row, the original rows of both layers "
      "for the retained rows: those on the kept side of min Ω + γ·(max Ω − min Ω), or the ⌈γ·T⌉ of largest Ω per "
      "KV head (retain=top) (docs/methods/minicache.md §2–3)";
  m.params = {
      {"t", ParamType::real, "0.6", "SLERP weight of the later layer of a pair (paper 0.6; xKV's code 0.5)", {}, 0.0, 1.0},
      {"gamma", ParamType::real, "0.05",
       "retention: with below/above the threshold as a fraction of the pair's Ω range; with top the fraction of "
       "each head's tokens kept (paper, xKV and KVCache-Factory 0.05)",
       {}, 0.0, 1.0},
      {"start", ParamType::integer, "-1", "first layer of the first pair; -1 = L/2 (paper: from the middle layer)", {},
       -1, 1e9},
      {"end", ParamType::integer, "-1", "last layer a pair may use; -1 = L-1", {}, -1, 1e9},
      {"retain", ParamType::choice, "below",
       "rows kept unmerged: below = Omega <= threshold (default; xKV's fake_minicache_merge), above = Omega > "
       "threshold (the abstract's reading, xKV's threshold mirrored), top = the ceil(gamma·T) rows of largest "
       "Omega per KV head, ties to the earlier token (KVCache-Factory pyramidkv/minicache.py)",
       {"below", "above", "top"}},
      {"scope", ParamType::choice, "global",
       "threshold min/max over all heads and tokens of the pair (global, xKV) or per KV head (head); retain=top "
       "always ranks per KV head",
       {"global", "head"}},
      {"part", ParamType::choice, "both", "which part is merged; the other is stored dense", {"both", "key", "value"}},
  };
  m.resolve = [](StageSpec& spec, const std::vector<std::string>&) {
    const auto start = spec.get_int("start"), end = spec.get_int("end");
    if (start >= 0 && end >= 0 && end < start + 1)
      fail("spec 'minicache': key 'end' = {} leaves no layer pair after start = {} (needs end >= start + 1)", end,
           start);
  };
  m.make_transform = make_minicache;
  m.device = DevicePath::minicache;
  return m;
}

namespace {

constexpr std::array<Part, 2> kParts{Part::key, Part::value};

// The host runs the kernel (minicache_kernel.h) on blocks of a head's rows, so that its [n, D]
// double temporaries stay in cache (whole heads of 16k tokens ran 4× slower).
constexpr std::int64_t kBlockRows = 64;

// Rows [t0, t0 + n) of KV head h of a layer part [T, H, D], in double: [n, D].
HostOps::Tensor head_rows(const FloatTensor& x, int h, std::int64_t t0, std::int64_t n) {
  const std::int64_t H = x.shape[1], D = x.shape[2];
  HostOps::Tensor out(n, D);
  for (std::int64_t t = 0; t < n; ++t)
    for (std::int64_t d = 0; d < D; ++d) out(t, d) = x.data[static_cast<std::size_t>(((t0 + t) * H + h) * D + d)];
  return out;
}

// The angles of rows [t0, t0 + n) of `g`.
MinicacheAngles<HostOps> angle_rows(const MinicacheAngles<HostOps>& g, std::int64_t t0, std::int64_t n) {
  return {g.norm1.middleRows(t0, n), g.norm2.middleRows(t0, n), g.omega.middleRows(t0, n), g.valid.segment(t0, n)};
}

// The angles of every row of KV head h of a layer pair.
MinicacheAngles<HostOps> head_angles(const FloatTensor& x1, const FloatTensor& x2, int h) {
  const std::int64_t T = x1.shape[0];
  MinicacheAngles<HostOps> g{HostOps::Tensor(T, 1), HostOps::Tensor(T, 1), HostOps::Tensor(T, 1), HostOps::Mask(T)};
  for (std::int64_t t0 = 0; t0 < T; t0 += kBlockRows) {
    const auto n = std::min(kBlockRows, T - t0);
    const auto part = minicache_angles<HostOps>(head_rows(x1, h, t0, n), head_rows(x2, h, t0, n));
    g.norm1.middleRows(t0, n) = part.norm1;
    g.norm2.middleRows(t0, n) = part.norm2;
    g.omega.middleRows(t0, n) = part.omega;
    g.valid.segment(t0, n) = part.valid;
  }
  return g;
}

struct Options {
  double t = 0.6, gamma = 0.05;
  std::int64_t start = -1, end = -1;  // as written; -1 resolved against L in compress
  bool retain_above = false;
  bool retain_top = false;  // KVCache-Factory's count per head; the threshold and scope are unused
  bool scope_head = false;
  bool merge[2] = {true, true};  // key, value
  std::string retain, scope, part;
};

// One (pair, part, KV head) block: rows of the head's T tokens, merged or retained.
struct Block {
  int direction = -1;   // slot of [m, D] merged directions (−1 when m = 0)
  int magnitudes = -1;  // slot of [2, m] magnitudes: row 0 the earlier layer, row 1 the later
  int original1 = -1, original2 = -1;  // slots of the retained rows [r, D] of each layer (−1 when r = 0)
  int index = -1;       // slot of the int32 token indices [r] kept unmerged, ascending (−1 when r = 0)
};

class MiniCacheCompressed final : public Compressed {
 public:
  MiniCacheCompressed(const CompressContext& ctx, const Options& opt)
      : shape_(ctx.cache.shape()), ropes_(layer_ropes(ctx.cache)), positions_(ctx.cache.positions()), opt_(opt) {
    const int L = shape_.layers;
    pairs_ = minicache_pairs(opt.start, opt.end, L, fmt::format("minicache on {}", ctx.cache.describe()));
    start_ = opt.start >= 0 ? static_cast<int>(opt.start) : L / 2;
    end_ = opt.end >= 0 ? static_cast<int>(opt.end) : L - 1;

    pair_of_.assign(static_cast<std::size_t>(L), -1);
    for (std::size_t k = 0; k < pairs_.size(); ++k) pair_of_[pairs_[k]] = pair_of_[pairs_[k] + 1] = static_cast<int>(k);
    dense_slot_.assign(static_cast<std::size_t>(L) * 2, -1);
    blocks_.resize(pairs_.size() * 2 * static_cast<std::size_t>(shape_.kv_heads));
    merged_fraction_.assign(pairs_.size() * 2, 0.0);
    thresholds_.resize(pairs_.size() * 2);

    for (int l = 0; l < L; ++l)
      for (int p = 0; p < 2; ++p)
        if (pair_of_[l] < 0 || !opt_.merge[p]) store_dense(ctx.cache, l, p);
    for (std::size_t k = 0; k < pairs_.size(); ++k)
      for (int p = 0; p < 2; ++p)
        if (opt_.merge[p]) merge_pair(ctx.cache, static_cast<int>(k), p);
  }

  std::vector<StoredTensor*> stored() override {
    std::vector<StoredTensor*> out;
    for (auto& t : tensors_) out.push_back(&t);
    return out;
  }

  LayerKV reconstruct(int layer) const override {
    if (layer < 0 || layer >= shape_.layers)
      fail("minicache: layer {} outside [0, {})", layer, shape_.layers);
    const int H = shape_.kv_heads, D = shape_.head_dim;
    const std::int64_t T = shape_.tokens;
    LayerKV out{FloatTensor({T, H, D}), FloatTensor({T, H, D}), {}};
    for (int p = 0; p < 2; ++p) {
      auto& dst = p == 0 ? out.key : out.value;
      const int slot = dense_slot_[static_cast<std::size_t>(layer) * 2 + p];
      if (slot >= 0) {
        dst = rebuild_uncompressed(tensors_[slot], kParts[p], shape_, ropes_[static_cast<std::size_t>(layer)], positions_);
        continue;
      }
      const int k = pair_of_[layer];
      const int which = layer - pairs_[k];  // 0: earlier layer, 1: later layer
      for (int h = 0; h < H; ++h) {
        const auto& b = block(k, p, h);
        const float* dir = b.direction >= 0 ? tensors_[b.direction].values.data() : nullptr;
        const float* mag = nullptr;
        std::int64_t m = 0;
        if (b.magnitudes >= 0) {
          m = tensors_[b.magnitudes].shape[1];
          mag = tensors_[b.magnitudes].values.data() + which * m;
        }
        const float* orig = nullptr;
        const auto retained = b.index >= 0 ? tensors_[b.index].unpack_indices() : std::vector<std::int32_t>{};
        if (!retained.empty()) orig = tensors_[which == 0 ? b.original1 : b.original2].values.data();
        std::size_t j = 0;
        std::int64_t i = 0;
        for (std::int64_t t = 0; t < T; ++t) {
          float* row = dst.data.data() + (t * H + h) * D;
          if (j < retained.size() && retained[j] == t) {
            std::copy_n(orig + static_cast<std::int64_t>(j) * D, D, row);
            ++j;
          } else {
            for (int d = 0; d < D; ++d) row[d] = dir[i * D + d] * mag[i];
            ++i;
          }
        }
      }
    }
    return out;
  }

  nlohmann::json notes() const override {
    nlohmann::json n;
    const int L = shape_.layers;
    const auto merged_pairs = static_cast<int>(pairs_.size());
    n["retain"] = opt_.retain_top ? "top: the ceil(gamma*T) rows of largest Omega per KV head kept unmerged "
                                    "(KVCache-Factory)"
                  : opt_.retain_above ? "above: rows with Omega > threshold kept unmerged (the abstract's reading)"
                                      : "below: rows with Omega <= threshold kept unmerged (xKV/CommonKV code)";
    n["scope"] = opt_.retain_top ? "head" : opt_.scope;
    if (opt_.retain_top) n["retained_per_head"] = static_cast<std::int64_t>(std::ceil(opt_.gamma * static_cast<double>(shape_.tokens)));
    n["part"] = opt_.part;
    n["t"] = opt_.t;
    n["gamma"] = opt_.gamma;
    n["layers"] = nlohmann::json::array({start_, end_});
    n["pairs"] = merged_pairs;
    // xKV's count (docs/methods/minicache.md §6): L/(L − merged pairs), ignoring magnitudes,
    // retained rows and indices; the measured ratio comes from the stored bytes.
    n["authors_ratio"] = L - merged_pairs > 0 ? static_cast<double>(L) / (L - merged_pairs) : 0.0;
    n["authors_ratio_formula"] = "L / (L - merged pairs) (xKV), counts K and V merged whatever 'part' is";
    auto per_pair = nlohmann::json::object();
    double total = 0;
    int count = 0;
    for (std::size_t k = 0; k < pairs_.size(); ++k) {
      auto entry = nlohmann::json::object();
      for (int p = 0; p < 2; ++p) {
        if (!opt_.merge[p]) continue;
        const std::string part{to_string(kParts[p])};
        entry[part] = merged_fraction_[k * 2 + p];
        entry[part + "_threshold"] = thresholds_[k * 2 + p];
        total += merged_fraction_[k * 2 + p];
        ++count;
      }
      per_pair[fmt::format("{}-{}", pairs_[k], pairs_[k] + 1)] = entry;
    }
    n["merged_fraction_per_pair"] = per_pair;  // merged rows / (T·H_kv), per part, and Ω thresholds (radians; none with top)
    n["merged_fraction"] = count > 0 ? total / count : 0.0;
    n["keys"] = "pre-RoPE in merged pairs, post-RoPE in dense layers";
    return n;
  }

 private:
  Block& block(int k, int p, int h) { return blocks_[(static_cast<std::size_t>(k) * 2 + p) * shape_.kv_heads + h]; }
  const Block& block(int k, int p, int h) const {
    return blocks_[(static_cast<std::size_t>(k) * 2 + p) * shape_.kv_heads + h];
  }

  int add(StoredTensor t) {
    tensors_.push_back(std::move(t));
    return static_cast<int>(tensors_.size()) - 1;
  }

  void store_dense(const CacheSource& cache, int l, int p) {
    dense_slot_[static_cast<std::size_t>(l) * 2 + p] = add(store_uncompressed(cache, l, kParts[p]));
  }

  void merge_pair(const CacheSource& cache, int k, int p) {
    const int a = pairs_[k], H = shape_.kv_heads, D = shape_.head_dim;
    const std::int64_t T = shape_.tokens, rows = T * H;
    const auto x1 = cache.layer(a, kParts[p]);
    const auto x2 = cache.layer(a + 1, kParts[p]);

    // Pass 1: angles, and each head's retained rows with the thresholds of its scope group
    // (minicache_kernel.h; retain=top has none).
    std::vector<MinicacheAngles<HostOps>> ang;
    for (int h = 0; h < H; ++h) ang.push_back(head_angles(x1, x2, h));
    const auto retention = minicache_retention(ang, opt_.retain, opt_.scope_head, opt_.gamma, T);
    auto& thr_note = thresholds_[static_cast<std::size_t>(k) * 2 + p];
    thr_note = nlohmann::json::array();
    for (const auto& th : retention.thresholds) thr_note.push_back(th(0, 0));

    // Pass 2: per head, merged rows → direction + magnitudes, retained rows → both originals.
    const std::string prefix = fmt::format("pair{}-{}/{}", a, a + 1, to_string(kParts[p]));
    const auto quant = p == 0 ? QuantLayout::per_channel : QuantLayout::per_token;
    std::int64_t merged_total = 0;
    for (int h = 0; h < H; ++h) {
      auto& b = block(k, p, h);
      const auto& g = ang[static_cast<std::size_t>(h)];
      const auto& keep = retention.keep[static_cast<std::size_t>(h)];
      std::vector<float> dir, mag1, mag2, orig1, orig2;
      std::vector<std::int32_t> retained;  // token indices kept unmerged, ascending
      HostOps::Tensor e;  // the directions of the rows of the block at t0
      for (std::int64_t t = 0, t0 = 0; t < T; ++t) {
        if (t % kBlockRows == 0) {
          t0 = t;
          const auto n = std::min(kBlockRows, T - t0);
          e = minicache_directions(head_rows(x1, h, t0, n), head_rows(x2, h, t0, n), angle_rows(g, t0, n), opt_.t);
        }
        const auto r = t * H + h;
        if (keep(t)) {
          retained.push_back(static_cast<std::int32_t>(t));
          orig1.insert(orig1.end(), x1.data.data() + r * D, x1.data.data() + (r + 1) * D);
          orig2.insert(orig2.end(), x2.data.data() + r * D, x2.data.data() + (r + 1) * D);
        } else {
          for (int d = 0; d < D; ++d) dir.push_back(static_cast<float>(e(t - t0, d)));
          mag1.push_back(static_cast<float>(g.norm1(t, 0)));
          mag2.push_back(static_cast<float>(g.norm2(t, 0)));
        }
      }
      const auto m = static_cast<std::int64_t>(mag1.size());
      const auto n_ret = static_cast<std::int64_t>(retained.size());
      merged_total += m;
      const std::string head = fmt::format("{}/head{}/", prefix, h);
      if (m > 0) {
        b.direction = add(StoredTensor::fp16(head + "direction", {m, D}, std::move(dir), QuantLayout::per_token, true));
        mag1.insert(mag1.end(), mag2.begin(), mag2.end());
        b.magnitudes = add(StoredTensor::fp16(head + "magnitudes", {2, m}, std::move(mag1), QuantLayout::none, false));
      }
      if (n_ret > 0) {
        b.original1 = add(StoredTensor::fp16(fmt::format("{}retained{}", head, a), {n_ret, D}, std::move(orig1), quant, true));
        b.original2 =
            add(StoredTensor::fp16(fmt::format("{}retained{}", head, a + 1), {n_ret, D}, std::move(orig2), quant, true));
        b.index = add(StoredTensor::indices(head + "retained_index", retained));
      }
    }
    merged_fraction_[static_cast<std::size_t>(k) * 2 + p] = rows > 0 ? static_cast<double>(merged_total) / rows : 0.0;
  }

  CacheShape shape_;
  std::vector<core::Rope> ropes_;  // [L]
  std::vector<std::int64_t> positions_;
  Options opt_;
  int start_ = 0, end_ = 0;
  std::vector<int> pairs_;       // first layer of each pair
  std::vector<int> pair_of_;     // [L] pair index or −1
  std::vector<int> dense_slot_;  // [L·2] slot of the dense [T, H·D] tensor, −1 when merged
  std::vector<Block> blocks_;    // [pairs·2·H]
  std::vector<double> merged_fraction_;       // [pairs·2]
  std::vector<nlohmann::json> thresholds_;    // [pairs·2] Ω thresholds (radians), one per scope group
  std::vector<StoredTensor> tensors_;
};

class MiniCache final : public TransformStage {
 public:
  explicit MiniCache(Options opt) : opt_(std::move(opt)) {}
  std::unique_ptr<Compressed> compress(const CompressContext& ctx) const override {
    return std::make_unique<MiniCacheCompressed>(ctx, opt_);
  }

 private:
  Options opt_;
};

}  // namespace

SlerpRow slerp_rows(std::span<const float> x1, std::span<const float> x2, double t) {
  if (x1.size() != x2.size()) fail("minicache slerp: rows of {} and {} values", x1.size(), x2.size());
  const auto row = [](std::span<const float> x) {
    return HostOps::Tensor(Eigen::Map<const Eigen::ArrayXf>(x.data(), static_cast<Eigen::Index>(x.size())).cast<double>().transpose());
  };
  const HostOps::Tensor a = row(x1), b = row(x2);
  const auto g = minicache_angles<HostOps>(a, b);
  const HostOps::Tensor e = minicache_directions(a, b, g, t);
  SlerpRow out;
  for (Eigen::Index d = 0; d < e.cols(); ++d) out.direction.push_back(static_cast<float>(e(0, d)));
  out.omega = g.omega(0, 0);
  out.norm1 = g.norm1(0, 0);
  out.norm2 = g.norm2(0, 0);
  out.degenerate = !g.valid(0);
  return out;
}

std::vector<int> minicache_pairs(std::int64_t start, std::int64_t end, int layers, std::string_view where) {
  const int L = layers;
  if (start >= L) fail("{}: key 'start' = {} is beyond the last layer {} (L = {})", where, start, L - 1, L);
  if (end >= L) fail("{}: key 'end' = {} is beyond the last layer {} (L = {})", where, end, L - 1, L);
  const int first = start >= 0 ? static_cast<int>(start) : L / 2;
  const int last = end >= 0 ? static_cast<int>(end) : L - 1;
  if (start >= 0 && first + 1 > last)
    fail("{}: key 'start' = {} leaves no layer pair within [{}, {}]", where, start, first, last);
  std::vector<int> pairs;
  for (int a = first; a + 1 <= last; a += 2) pairs.push_back(a);
  return pairs;
}

std::unique_ptr<TransformStage> make_minicache(const StageSpec& spec) {
  Options o;
  o.t = spec.get_real("t");
  o.gamma = spec.get_real("gamma");
  o.start = spec.get_int("start");
  o.end = spec.get_int("end");
  o.retain = spec.get("retain");
  o.scope = spec.get("scope");
  o.part = spec.get("part");
  o.retain_above = o.retain == "above";
  o.retain_top = o.retain == "top";
  o.scope_head = o.scope == "head";
  o.merge[0] = o.part != "value";
  o.merge[1] = o.part != "key";
  return std::make_unique<MiniCache>(std::move(o));
}

}  // namespace kvlab::compressors
