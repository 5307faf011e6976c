// svd and xkv: truncated SVD of one layer (svd) or of a contiguous group of layers (xkv),
// docs/methods/svd-xkv.md, by the Gram + symmetric eigensolver route (docs/performance.md §4)
// or HMT randomized subspace iteration (docs/performance.md §5).
#include "compressors/methods/low_rank.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <future>
#include <limits>
#include <map>

#include "compressors/dense.h"
#include "compressors/methods/low_rank_plan.h"
#include "core/error.h"
#include "core/parallel.h"
#include "core/profile.h"
#include "linalg/fan_out.h"

namespace kvlab::compressors {

namespace {

constexpr std::size_t kNone = std::numeric_limits<std::size_t>::max();
constexpr Part kParts[] = {Part::key, Part::value};
int part_index(Part p) { return p == Part::key ? 0 : 1; }

// ---------------------------------------------------------------------------------------------
// Spec

// The keys svd and xkv share (after their grouping keys), in declared order.
std::vector<ParamDef> shared_params(const std::string& rk_default, const std::string& paper) {
  return {
      {"rk", ParamType::integer, rk_default, "key rank per group (" + paper + ")", {}, 1, 1e9},
      {"rv", ParamType::integer, "0", "value rank per group; default round(1.5·rk), the 1:1.5 of every xKV script", {}, 0, 1e9},
      {"part", ParamType::choice, "both", "what to compress (xKV's merge_key/merge_value); the other part stays fp16",
       {"both", "key", "value"}},
      {"solver", ParamType::choice, "exact",
       "exact: Gram XᵀX + top-r eigenpairs (the T×T token Gram X·Xᵀ when T < columns), as the authors' exact SVD; "
       "randomized: "
       "HMT subspace iteration",
       {"exact", "randomized"}},
      {"oversample", ParamType::integer, "10", "randomized: extra sketch columns p (HMT)", {}, 0, 1e6},
      {"iters", ParamType::integer, "2", "randomized: power iterations q, re-orthonormalised after every product", {}, 0,
       100},
      {"precision", ParamType::choice, "f64",
       "of the Gram and eigensolve (randomized: of the small SVD); f32 loses σ below ~1e-3·σ₁ (docs/performance.md §4); "
       "tf32/bf16: the exact route's Gram from inputs rounded as tensor cores round them (f32 sums, emulated on "
       "the CPU), everything else f32",
       {"f32", "f64", "tf32", "bf16"}},
      {"seed", ParamType::integer, "0", "randomized: seed of the Gaussian sketch", {}, 0, 9.2e18},
  };
}

// The largest layer index a group may name: far above any model's layer count, and a bound on
// the work a mistyped spec costs ("0-75555555" would otherwise build 75 million layers).
constexpr int kMaxGroupLayer = 65535;

// "0-3/4-7/8" → {{0,1,2,3},{4,5,6,7},{8}}; checks syntax and overlap (the layer count is not
// known here).
std::vector<std::vector<int>> parse_groups(const std::string& method, const std::string& text) {
  std::vector<std::vector<int>> groups;
  std::map<int, std::size_t> owner;  // layer → group index
  std::size_t pos = 0;
  while (pos <= text.size()) {
    const auto slash = std::min(text.find('/', pos), text.size());
    const std::string item = text.substr(pos, slash - pos);
    const auto bad = [&] {
      fail("spec '{}': key 'groups' = '{}': '{}' is not a layer range A-B or a layer A (groups are separated by '/')",
           method, text, item);
    };
    const auto dash = item.find('-');
    int a = 0, b = 0;
    const auto num = [&](std::string_view s, int& out) {
      auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
      if (s.empty() || ec != std::errc() || p != s.data() + s.size() || out < 0) bad();
      if (out > kMaxGroupLayer)
        fail("spec '{}': key 'groups': layer {} is above {} (no model has that many layers)", method, out, kMaxGroupLayer);
    };
    if (dash == std::string::npos) {
      num(item, a);
      b = a;
    } else {
      num(std::string_view(item).substr(0, dash), a);
      num(std::string_view(item).substr(dash + 1), b);
    }
    if (b < a) fail("spec '{}': key 'groups': range '{}' ends before it starts", method, item);
    std::vector<int> g;
    for (int l = a; l <= b; ++l) {
      if (const auto [it, added] = owner.emplace(l, groups.size()); !added)
        fail("spec '{}': key 'groups': layer {} is in two groups (group {} and group {})", method, l, it->second, groups.size());
      g.push_back(l);
    }
    groups.push_back(std::move(g));
    pos = slash + 1;
  }
  return groups;
}

void resolve_low_rank(StageSpec& spec, const std::vector<std::string>& given) {
  const auto was_given = [&](std::string_view k) { return std::find(given.begin(), given.end(), k) != given.end(); };
  const auto rk = spec.get_int("rk");
  if (!was_given("rv")) {
    spec.set("rv", std::to_string(std::llround(1.5 * static_cast<double>(rk))));
  } else if (spec.get_int("rv") < 1) {
    fail("spec '{}': key 'rv' = {} must be ≥ 1 (use part=key to keep values uncompressed)", spec.method, spec.get("rv"));
  }
  if (spec.method == "xkv") {
    if (!spec.get("groups").empty()) parse_groups(spec.method, spec.get("groups"));
    const auto start = spec.get_int("start"), end = spec.get_int("end");
    if (end != -1 && end < start) fail("spec 'xkv': key 'end' = {} is before start = {}", end, start);
  }
}

}  // namespace

MethodDef svd_method() {
  MethodDef m{"svd", StageKind::transform,
              "single-layer SVD (docs/methods/svd-xkv.md): per layer X_l ∈ R^{T×(H·D)}, all KV heads concatenated, pre-RoPE "
              "keys, K and V separately; stores A = X·V_r [T, r] and B = V_rᵀ [r, H·D] at fp16",
              shared_params("96", "later xKV scripts: 96; v1: 128"),
              resolve_low_rank};
  m.make_transform = make_low_rank;
  m.sweep = compress_low_rank_sweep;
  m.device = DevicePath::low_rank;
  return m;
}

MethodDef xkv_method() {
  std::vector<ParamDef> params = {
      {"g", ParamType::integer, "4", "layers per group G (xKV-4 is the paper's main setting)", {}, 1, 1e6},
  };
  for (auto& p : shared_params("384", "xKV-4: 384; v1: 512")) params.push_back(std::move(p));
  // Grouping keys after the ranks so the common prefix reads "g=4,rk=384,rv=576".
  params.insert(params.begin() + 3,
                {{"start", ParamType::integer, "0", "first grouped layer; layers outside [start, end] stay fp16", {}, 0, 1e6},
                 {"end", ParamType::integer, "-1", "last grouped layer, inclusive (-1 = L−1); the last group is cut at end",
                  {}, -1, 1e6},
                 {"groups", ParamType::text, "",
                  "custom groups '0-3/4-7/8-15' (each layer at most once; overrides g, start, end)", {}}});
  MethodDef m{"xkv", StageKind::transform,
              "cross-layer SVD (xKV, docs/methods/svd-xkv.md): contiguous groups of G layers, X_g = [X_l … X_{l+G−1}] ∈ "
              "R^{T×(G·H·D)}, pre-RoPE keys, K and V separately; stores a shared A [T, r] per group and B_l [r, H·D] "
              "per layer at fp16; ranks are per group",
              std::move(params), resolve_low_rank};
  m.make_transform = make_low_rank;
  m.sweep = compress_low_rank_sweep;
  m.device = DevicePath::low_rank;
  return m;
}

LowRankPlan make_low_rank_plan(const StageSpec& spec, const CacheShape& shape) {
  LowRankPlan p;
  p.method = spec.method;
  p.groups = low_rank_groups(spec, shape.layers);
  p.group_of.assign(static_cast<std::size_t>(shape.layers), -1);
  for (std::size_t g = 0; g < p.groups.size(); ++g)
    for (int l : p.groups[g]) p.group_of[static_cast<std::size_t>(l)] = static_cast<int>(g);
  const auto& parts = spec.get("part");
  p.compress_key = parts != "value";
  p.compress_value = parts != "key";
  p.rk = spec.get_int("rk");
  p.rv = spec.get_int("rv");
  p.randomized = spec.get("solver") == "randomized";
  p.oversample = spec.get_int("oversample");
  p.iters = spec.get_int("iters");
  p.gram_precision = linalg::parse_gram_precision(spec.get("precision"));
  p.seed = static_cast<std::uint64_t>(spec.get_int("seed"));
  std::size_t widest = 0;  // layers in the largest group (a short last group clamps its rank)
  for (const auto& g : p.groups) widest = std::max(widest, g.size());
  const std::int64_t columns = static_cast<std::int64_t>(widest) * shape.width();
  for (const Part part : kParts)
    if (p.compresses(part) && p.rank(part) > columns)
      fail("spec '{}': key '{}' = {} exceeds the {} columns of a group of {} layer(s) × {} KV heads × {} head dims, "
           "the highest rank it has",
           spec.method, part == Part::key ? "rk" : "rv", p.rank(part), columns, widest, shape.kv_heads, shape.head_dim);
  return p;
}

std::vector<std::vector<int>> low_rank_groups(const StageSpec& spec, int layers) {
  std::vector<std::vector<int>> groups;
  if (spec.method == "svd") {
    for (int l = 0; l < layers; ++l) groups.push_back({l});
    return groups;
  }
  if (spec.method != "xkv") fail("low-rank compressor: '{}' is neither svd nor xkv", spec.method);
  if (!spec.get("groups").empty()) {
    groups = parse_groups(spec.method, spec.get("groups"));
    for (const auto& g : groups)
      for (int l : g)
        if (l >= layers) fail("spec 'xkv': key 'groups': layer {} is outside [0, {}) of this cache", l, layers);
    return groups;
  }
  const auto g = spec.get_int("g"), start = spec.get_int("start");
  const auto end = spec.get_int("end") == -1 ? std::int64_t{layers} - 1 : spec.get_int("end");
  if (start >= layers) fail("spec 'xkv': key 'start' = {} is outside [0, {}) of this cache", start, layers);
  if (end >= layers) fail("spec 'xkv': key 'end' = {} is outside [0, {}) of this cache", end, layers);
  for (auto first = start; first <= end; first += g) {
    std::vector<int> grp;
    for (auto l = first; l <= std::min(end, first + g - 1); ++l) grp.push_back(static_cast<int>(l));
    groups.push_back(std::move(grp));
  }
  return groups;
}

namespace {

// ---------------------------------------------------------------------------------------------
// Decomposition

// The rank-`rank` factors of one group matrix, at the largest rank asked for; any smaller
// rank is a prefix (the top eigenvectors nest).
// rank: effective, min(asked, T, columns); a [T, rank], v [columns, rank], energy [rank]: σ_i²
// (exact), ‖X·v_i‖² (randomized), as linalg::SubspaceFactors, with canonical signs (a chained
// quantizer sees the factors, so every backend must hand over the same ones).
struct Factors : linalg::SubspaceFactors {
  double trace = 0;            // ‖X‖²_F, in f64 from the data
  std::string route;           // "gram-f64", "token-gram-f32", "randomized-f32", ...

  // Relative Frobenius error of the rank-r truncation, √((‖X‖² − Σ_{i<r} energy_i)/‖X‖²):
  // Eckart–Young for the exact route; exact for the stored V_r on the randomized route, since
  // ‖X − X·V_r·V_rᵀ‖² = ‖X‖² − ‖X·V_r‖² for orthonormal V_r.
  double predicted_rel_error(std::int64_t r) const {
    if (trace <= 0) return 0.0;
    double kept = 0;
    for (std::int64_t i = 0; i < std::min(r, rank); ++i) kept += energy[static_cast<std::size_t>(i)];
    return std::sqrt(std::max(trace - kept, 0.0) / trace);
  }
};

// X of a group into x, [T, G·N] row-major: column block i is layer groups[i]; returns ‖X‖²_F
// (in f64, summed layer by layer in order, so independent of the threads). The caller reuses
// x from group to group: a fresh matrix (2 GiB at 128k tokens) cost more in page faults and
// zeroing than copying the layers into it (0.14 s against 0.03 s per 256 MiB, measured).
// The layers are read into their column blocks side by side (core::parallel_for, and
// CacheSource::read_layer_into: a dump streams token blocks, so no whole layer is held besides
// x): a dump serialises its HDF5 reads, but the 16-bit conversion, the checks and the copies run
// side by side, and on the GPU these host passes are most of a compression.
double read_group(const CacheSource& cache, const std::vector<int>& layers, Part part, std::vector<float>& x) {
  const auto& s = cache.shape();
  const std::int64_t T = s.tokens, N = s.width(), c = N * static_cast<std::int64_t>(layers.size());
  x.resize(static_cast<std::size_t>(T * c));
  std::vector<double> squares(layers.size(), 0.0);
  core::parallel_for(static_cast<std::int64_t>(layers.size()), [&](std::int64_t i) {
    float* block = x.data() + i * N;
    cache.read_layer_into(layers[static_cast<std::size_t>(i)], part, block, c);
    double& sum = squares[static_cast<std::size_t>(i)];
    for (std::int64_t t = 0; t < T; ++t)
      for (std::int64_t n = 0; n < N; ++n) sum += double(block[t * c + n]) * double(block[t * c + n]);
  });
  double trace = 0;
  for (double square : squares) trace += square;
  return trace;
}

// The factors by the plan's route, signs as the backend left them.
Factors factors_by_route(linalg::Backend& be, const std::vector<float>& x, std::int64_t T, std::int64_t c,
                         std::int64_t rank, const LowRankPlan& plan, std::uint64_t stream,
                         linalg::TokenGramScratch& scratch) {
  Factors f;
  f.rank = std::min({rank, T, c});
  const std::int64_t r = f.rank;
  if (r == 0) return f;
  // The backend's Gram and randomized routes form A = X·V_r themselves (on CUDA without a
  // second upload of X); both return rank r = f.rank.
  const std::string prec = plan.f64() ? "f64" : "f32";
  if (plan.randomized) {
    static_cast<linalg::SubspaceFactors&>(f) =
        be.randomized_subspace(x.data(), T, c, r, {plan.oversample, plan.iters, plan.seed, stream, plan.f64()});
    f.route = "randomized-" + prec;
    return f;
  }
  if (T >= c) {
    static_cast<linalg::SubspaceFactors&>(f) = be.gram_subspace(x.data(), T, c, r, plan.gram_precision);
    f.route = "gram-" + std::string(linalg::to_string(plan.gram_precision));
    return f;
  }
  // Fewer tokens than columns: the T×T token Gram (its eigensolve (T/c)³ of the column one's).
  static_cast<linalg::SubspaceFactors&>(f) = linalg::token_gram_subspace(be, x.data(), T, c, r, plan.f64(), &scratch);
  f.route = "token-gram-" + prec;
  return f;
}

Factors decompose(linalg::Backend& be, const std::vector<float>& x, double trace, std::int64_t T, std::int64_t c,
                  std::int64_t rank, const LowRankPlan& plan, std::uint64_t stream, linalg::TokenGramScratch& scratch) {
  const core::ProfileScope scope("low-rank: decompose (backend)");
  Factors f = factors_by_route(be, x, T, c, rank, plan, stream, scratch);
  f.trace = trace;
  f.canonicalize_signs();
  return f;
}

// ---------------------------------------------------------------------------------------------
// The compressed cache

class LowRankCompressed final : public Compressed {
 public:
  LowRankCompressed(const CacheSource& cache, const LowRankPlan& plan, linalg::Backend& backend)
      : shape_(cache.shape()), ropes_(layer_ropes(cache)), positions_(cache.positions()), plan_(plan), backend_(&backend) {
    a_slot_.assign(plan_.groups.size() * 2, kNone);
    b_slot_.assign(static_cast<std::size_t>(shape_.layers) * 2, kNone);
    dense_slot_.assign(b_slot_.size(), kNone);
    group_notes_.assign(plan_.groups.size(), nlohmann::json::object());
    for (std::size_t g = 0; g < plan_.groups.size(); ++g) group_notes_[g]["layers"] = plan_.groups[g];
  }

  // Stores the first min(asked, f.rank) factors of group g's part (a prefix: the top eigenvectors nest).
  void add_factors(std::size_t g, Part part, const Factors& f, std::int64_t asked) {
    const std::int64_t T = shape_.tokens, N = shape_.width();
    const std::int64_t r = std::min(asked, f.rank);
    const auto c = N * static_cast<std::int64_t>(plan_.groups[g].size());
    const auto p = static_cast<std::size_t>(part_index(part));
    std::vector<float> a(static_cast<std::size_t>(T * r));
    for (std::int64_t t = 0; t < T; ++t) std::copy_n(f.a.begin() + t * f.rank, r, a.begin() + t * r);
    a_slot_[g * 2 + p] = tensors_.size();
    tensors_.push_back(StoredTensor::fp16(low_rank_a_name(g, part), {T, r}, std::move(a),
                                          QuantLayout::per_token, true));
    for (std::size_t i = 0; i < plan_.groups[g].size(); ++i) {
      const int l = plan_.groups[g][i];
      std::vector<float> b(static_cast<std::size_t>(r * N));  // B_l[j, n] = V_r[i·N + n, j]
      for (std::int64_t j = 0; j < r; ++j)
        std::copy_n(f.v.begin() + j * c + static_cast<std::int64_t>(i) * N, N, b.begin() + j * N);
      b_slot_[static_cast<std::size_t>(l) * 2 + p] = tensors_.size();
      tensors_.push_back(StoredTensor::fp16(low_rank_b_name(l, part), {r, N}, std::move(b),
                                            QuantLayout::per_token, false));
    }
    group_notes_[g][std::string(to_string(part))] = {{"rank", asked},
                                                      {"effective_rank", r},
                                                      {"route", f.route},
                                                      {"predicted_rel_error", f.predicted_rel_error(r)}};
  }

  void add_dense(int layer, Part part, StoredTensor stored) {
    dense_slot_[static_cast<std::size_t>(layer) * 2 + part_index(part)] = tensors_.size();
    tensors_.push_back(std::move(stored));
  }

  void set_authors_ratio(double r) { authors_ratio_ = r; }

  std::vector<StoredTensor*> stored() override {
    std::vector<StoredTensor*> out;
    for (auto& t : tensors_) out.push_back(&t);
    return out;
  }

  LayerKV reconstruct(int layer) const override {
    const core::ProfileScope scope("low-rank: reconstruct");
    if (layer < 0 || layer >= shape_.layers) fail("{}: layer {} outside [0, {})", plan_.method, layer, shape_.layers);
    const std::int64_t T = shape_.tokens;
    LayerKV out{FloatTensor({T, shape_.kv_heads, shape_.head_dim}), FloatTensor({T, shape_.kv_heads, shape_.head_dim}), {}};
    for (Part part : kParts) rebuild(layer, part, part == Part::key ? out.key.data : out.value.data);
    return out;
  }

  nlohmann::json notes() const override {
    nlohmann::json uncompressed = nlohmann::json::array();
    for (int l = 0; l < shape_.layers; ++l)
      if (plan_.group_of[static_cast<std::size_t>(l)] < 0) uncompressed.push_back(l);
    nlohmann::json n = {{"method", plan_.method},
                        {"solver", plan_.randomized ? "randomized" : "exact"},
                        {"precision", linalg::to_string(plan_.gram_precision)},
                        {"groups", group_notes_},
                        {"uncompressed_layers", uncompressed},
                        {"authors_ratio", authors_ratio_}};
    if (plan_.randomized) {  // what reproduces the sketch
      n["seed"] = plan_.seed;
      n["oversample"] = plan_.oversample;
      n["iters"] = plan_.iters;
    }
    return n;
  }

 private:
  // X̂_l from the stored values only (a chained quantizer may have changed them).
  void rebuild(int layer, Part part, std::vector<float>& out) const {
    const auto p = static_cast<std::size_t>(part_index(part));
    const std::int64_t T = shape_.tokens, N = shape_.width();
    if (const auto d = dense_slot_[static_cast<std::size_t>(layer) * 2 + p]; d != kNone) {
      out = rebuild_uncompressed(tensors_[d], part, shape_, ropes_[static_cast<std::size_t>(layer)], positions_).data;
      return;
    }
    const auto g = static_cast<std::size_t>(plan_.group_of[static_cast<std::size_t>(layer)]);
    const auto& a = tensors_[a_slot_[g * 2 + p]];
    const auto& b = tensors_[b_slot_[static_cast<std::size_t>(layer) * 2 + p]];
    const std::int64_t r = a.shape.at(1);
    if (static_cast<std::int64_t>(a.values.size()) != T * r || static_cast<std::int64_t>(b.values.size()) != r * N)
      fail("{}: stored {} / {} have {} / {} values, expected {} / {}", plan_.method, a.name, b.name, a.values.size(),
           b.values.size(), T * r, r * N);
    if (r == 0 || T == 0) {
      std::fill(out.begin(), out.end(), 0.f);
      return;
    }
    // X̂_lᵀ (N×T, column-major view of row-major X̂_l) = B_lᵀ·Aᵀ; B_l row-major [r, N] is the
    // column-major B_lᵀ (N×r), A row-major [T, r] the column-major Aᵀ (r×T).
    backend_->gemm(false, false, N, T, r, 1.f, b.values.data(), N, a.values.data(), r, 0.f, out.data(), N);
  }

  CacheShape shape_;
  std::vector<core::Rope> ropes_;  // [L]
  std::vector<std::int64_t> positions_;
  LowRankPlan plan_;
  linalg::Backend* backend_;
  std::vector<StoredTensor> tensors_;
  std::vector<std::size_t> a_slot_;      // [groups·2] group's A per part
  std::vector<std::size_t> b_slot_;      // [L·2] layer's B per part
  std::vector<std::size_t> dense_slot_;  // [L·2] uncompressed layer per part
  std::vector<nlohmann::json> group_notes_;
  double authors_ratio_ = 0;
};

// Compresses with one plan at several (rk, rv) pairs: one decomposition per group and part at
// the largest rank, sliced for every pair. Reads each (layer, part) once, one group at a time.
std::vector<std::unique_ptr<Compressed>> run(const CompressContext& ctx, const std::vector<StageSpec>& specs) {
  const auto& shape = ctx.cache.shape();
  const LowRankPlan plan = make_low_rank_plan(specs.at(0), shape);
  std::vector<std::unique_ptr<LowRankCompressed>> reps;
  for (const auto& s : specs) {
    reps.push_back(std::make_unique<LowRankCompressed>(ctx.cache, make_low_rank_plan(s, shape), ctx.backend));
    reps.back()->set_authors_ratio(low_rank_accounting(shape, s).authors_ratio);
  }
  const std::int64_t T = shape.tokens, N = shape.width();
  std::vector<std::pair<std::size_t, Part>> work;  // (group, part) in order
  for (std::size_t g = 0; g < plan.groups.size(); ++g)
    for (Part part : kParts)
      if (plan.compresses(part)) work.emplace_back(g, part);
  // Solves in flight at once: two when the backend has two threads and a group matrix is at
  // most 256 MiB (four are held then, two read ahead). The exact routes' eigensolver (?syevr's
  // tridiagonal reduction, memory-bound) gains only 1.25–1.5× from a second BLAS thread; two
  // single-threaded solves side by side do better (bench/README.md, "xkv"). Larger matrices (GiBs
  // at 128k tokens) and the randomized route, whose GEMMs scale with their threads, keep one.
  constexpr std::int64_t kInFlightMaxFloats = std::int64_t(64) << 20;
  std::size_t largest_group = 0;
  for (const auto& group : plan.groups) largest_group = std::max(largest_group, group.size());
  const bool small = T * N * static_cast<std::int64_t>(largest_group) <= kInFlightMaxFloats;
  const std::size_t in_flight = !plan.randomized && small && ctx.backend.threads() > 1 ? 2 : 1;
  // Two batches of group matrices, reused: while one batch is decomposed (on the GPU, or by the
  // BLAS threads) the next is read into the other, so the reads, most of a GPU compression, hide
  // behind the solves.
  std::vector<std::vector<float>> x(2 * in_flight);
  std::vector<linalg::TokenGramScratch> scratch(in_flight);  // the token-Gram route's buffers, from group to group
  const std::size_t batches = (work.size() + in_flight - 1) / in_flight;
  const auto read = [&](std::size_t b) {
    const core::ProfileScope scope("low-rank: read group (ahead)");
    std::vector<double> traces;
    for (std::size_t i = b * in_flight; i < std::min(work.size(), (b + 1) * in_flight); ++i)
      traces.push_back(read_group(ctx.cache, plan.groups[work[i].first], work[i].second, x[i % x.size()]));
    return traces;
  };
  std::future<std::vector<double>> ahead;  // declared after x: its destructor waits for a read still in flight
  if (batches > 0) ahead = std::async(std::launch::async, read, 0);
  for (std::size_t b = 0; b < batches; ++b) {
    std::vector<double> traces;
    {
      const core::ProfileScope scope("low-rank: wait for the read");
      traces = ahead.get();
    }
    if (b + 1 < batches) ahead = std::async(std::launch::async, read, b + 1);
    std::vector<Factors> factors(traces.size());
    const linalg::OneThreadPerCall fan_out(ctx.backend, static_cast<int>(traces.size()));
    core::parallel_for(static_cast<std::int64_t>(traces.size()), [&](std::int64_t j) {
      const std::size_t i = b * in_flight + static_cast<std::size_t>(j);
      const auto [g, part] = work[i];
      std::int64_t r_max = 0;
      for (const auto& s : specs) r_max = std::max(r_max, s.get_int(part == Part::key ? "rk" : "rv"));
      const auto c = N * static_cast<std::int64_t>(plan.groups[g].size());
      factors[static_cast<std::size_t>(j)] =
          decompose(ctx.backend.worker(static_cast<int>(j)), x[i % x.size()], traces[static_cast<std::size_t>(j)], T, c,
                    r_max, plan, sketch_stream(g, part), scratch[static_cast<std::size_t>(j)]);
    });
    const core::ProfileScope scope("low-rank: store factors");
    for (std::size_t j = 0; j < factors.size(); ++j) {
      const auto [g, part] = work[b * in_flight + j];
      for (std::size_t k = 0; k < specs.size(); ++k)
        reps[k]->add_factors(g, part, factors[j], specs[k].get_int(part == Part::key ? "rk" : "rv"));
    }
  }
  for (int l = 0; l < shape.layers; ++l)
    for (Part part : kParts) {
      if (plan.group_of[static_cast<std::size_t>(l)] >= 0 && plan.compresses(part)) continue;
      auto stored = store_uncompressed(ctx.cache, l, part);
      for (std::size_t i = 0; i + 1 < reps.size(); ++i) reps[i]->add_dense(l, part, stored);
      reps.back()->add_dense(l, part, std::move(stored));
    }
  std::vector<std::unique_ptr<Compressed>> out;
  for (auto& r : reps) out.push_back(std::move(r));
  return out;
}

class LowRankStage final : public TransformStage {
 public:
  explicit LowRankStage(StageSpec spec) : spec_(std::move(spec)) {}
  std::unique_ptr<Compressed> compress(const CompressContext& ctx) const override {
    return std::move(run(ctx, {spec_}).front());
  }

 private:
  StageSpec spec_;
};

}  // namespace

std::unique_ptr<TransformStage> make_low_rank(const StageSpec& spec) {
  if (spec.method != "svd" && spec.method != "xkv") fail("low-rank compressor: '{}' is neither svd nor xkv", spec.method);
  return std::make_unique<LowRankStage>(spec);
}

std::vector<std::unique_ptr<Compressed>> compress_low_rank_sweep(const CompressContext& ctx,
                                                                 const std::vector<StageSpec>& variants) {
  if (variants.empty()) return {};
  // One shared decomposition is exact only for the exact solver: a randomized sketch depends
  // on its width r + p, so a spec's result would depend on what it was swept with.
  const auto same_but_ranks = [&](const StageSpec& s) {
    if (s.method != variants[0].method || s.params.size() != variants[0].params.size()) return false;
    for (std::size_t i = 0; i < s.params.size(); ++i)
      if (s.params[i].first != "rk" && s.params[i].first != "rv" && s.params[i] != variants[0].params[i]) return false;
    return true;
  };
  const bool share = (variants[0].method == "svd" || variants[0].method == "xkv") &&
                     std::all_of(variants.begin(), variants.end(), same_but_ranks) &&
                     variants[0].get("solver") == "exact";
  if (share) return run(ctx, variants);
  std::vector<std::unique_ptr<Compressed>> out;
  for (const auto& v : variants) out.push_back(make_low_rank(v)->compress(ctx));
  return out;
}

std::string low_rank_a_name(std::size_t group, Part part) { return fmt::format("group{}/{}/A", group, to_string(part)); }
std::string low_rank_b_name(int layer, Part part) { return fmt::format("layer{}/{}/B", layer, to_string(part)); }

LowRankAccounting low_rank_accounting(const CacheShape& shape, const StageSpec& spec) {
  const LowRankPlan plan = make_low_rank_plan(spec, shape);
  const std::int64_t T = shape.tokens, N = shape.width();
  LowRankAccounting acc;
  double authors_elements = 0;
  for (int l = 0; l < shape.layers; ++l)
    for (Part part : kParts)
      if (plan.group_of[static_cast<std::size_t>(l)] < 0 || !plan.compresses(part)) {
        acc.stored_bytes += 2 * T * N;  // the layer part at fp16
        authors_elements += static_cast<double>(T * N);
      }
  for (const auto& g : plan.groups) {
    const auto c = N * static_cast<std::int64_t>(g.size());
    for (Part part : kParts) {
      if (!plan.compresses(part)) continue;
      const auto r = std::min({plan.rank(part), T, c});
      acc.stored_bytes += 2 * (T * r + r * c);  // A [T, r] and each layer's B_l [r, N] at fp16
      authors_elements += static_cast<double>(T + c) * static_cast<double>(plan.rank(part));
    }
  }
  const auto dense = static_cast<double>(dense_fp16_bytes(shape));
  acc.stored_ratio = acc.stored_bytes > 0 ? dense / static_cast<double>(acc.stored_bytes) : 0.0;
  acc.authors_ratio = authors_elements > 0 ? dense / 2.0 / authors_elements : 0.0;
  return acc;
}

}  // namespace kvlab::compressors
