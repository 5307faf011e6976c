// kvquant: non-uniform quantization + dense-and-sparse outliers + sink rows (kvquant.h,
// docs/methods/kvquant.md).
#include "compressors/methods/kvquant.h"

#include <fmt/format.h>

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <numeric>
#include <set>
#include <thread>

#include "compressors/dense.h"
#include "compressors/packed_bytes.h"
#include "core/error.h"
#include "core/parallel.h"

namespace kvlab::compressors {

namespace {

// Byte offsets of a packed form with s sink rows and m outliers.
struct Offsets {
  std::int64_t sinks_at = 8, range_at = 0, codes_at = 0, outlier_at = 0, index_at = 0, total = 0;
};
Offsets offsets(QuantLayout layout, std::int64_t n, std::int64_t c, std::int64_t s, std::int64_t m, int bits) {
  Offsets o;
  const std::int64_t coded = n - s, ranges = layout == QuantLayout::per_channel ? c : coded;
  o.range_at = o.sinks_at + 2 * s * c;
  o.codes_at = o.range_at + 4 * ranges;
  o.outlier_at = o.codes_at + (coded * c * bits + 7) / 8;
  o.index_at = o.outlier_at + 2 * m;
  o.total = o.index_at + 4 * m;
  return o;
}

// Half the range and the midpoint of [lo, hi], in double (as the decode computes them).
double half_range(float lo, float hi) { return (double{hi} - double{lo}) / 2; }
double midpoint(float lo, float hi) { return (double{hi} + double{lo}) / 2; }

// Sorts x (finite floats) ascending: an LSD radix sort, three passes of 11 bits over the floats'
// bit patterns made order-preserving as unsigned integers (sign bit flipped for positives, all
// bits for negatives). The same order as std::sort (−0 before +0, which compare equal), linear in
// n: a layer's millions of points sort in a tenth of std::sort's time.
void radix_sort_floats(std::span<float> x) {
  const std::size_t n = x.size();
  std::vector<std::uint32_t> key(n), other(n);
  for (std::size_t i = 0; i < n; ++i) {
    std::uint32_t u = 0;
    std::memcpy(&u, &x[i], 4);
    key[i] = u & 0x80000000u ? ~u : u | 0x80000000u;
  }
  for (int shift = 0; shift < 32; shift += 11) {
    std::vector<std::size_t> start(2049, 0);
    for (const auto k : key) ++start[(k >> shift & 2047u) + 1];
    for (std::size_t b = 0; b < 2048; ++b) start[b + 1] += start[b];
    for (const auto k : key) other[start[k >> shift & 2047u]++] = k;
    key.swap(other);
  }
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint32_t k = key[i], u = k & 0x80000000u ? k & 0x7fffffffu : ~k;
    std::memcpy(&x[i], &u, 4);
  }
}

// Sorts x ascending: small inputs by std::sort; large ones radix-sorted in one chunk per thread
// (core::parallel_for), the chunks then merged (−0 and +0 compare equal, so a merge may put them
// either way round; nothing downstream tells them apart).
void sort_floats(std::vector<float>& x) {
  const std::size_t n = x.size();
  if (n < 4096) {
    std::sort(x.begin(), x.end());
    return;
  }
  const std::size_t chunks = std::min<std::size_t>(std::max(1u, std::thread::hardware_concurrency()), n / 4096);
  std::vector<std::size_t> bound(chunks + 1);
  for (std::size_t i = 0; i <= chunks; ++i) bound[i] = n * i / chunks;
  core::parallel_for(static_cast<std::int64_t>(chunks), [&](std::int64_t i) {
    radix_sort_floats(std::span(x).subspan(bound[i], bound[i + 1] - bound[i]));
  });
  for (std::size_t width = 1; width < chunks; width *= 2)
    for (std::size_t i = 0; i + width < chunks; i += 2 * width)
      std::inplace_merge(x.begin() + static_cast<std::ptrdiff_t>(bound[i]),
                         x.begin() + static_cast<std::ptrdiff_t>(bound[i + width]),
                         x.begin() + static_cast<std::ptrdiff_t>(bound[std::min(i + 2 * width, chunks)]));
}

}  // namespace

KvquantParams kvquant_params(const StageSpec& spec) {
  KvquantParams p;
  p.bits = static_cast<int>(spec.get_int("bits"));
  p.outliers = spec.get_real("outliers");
  p.sinks = spec.get_int("sinks");
  p.iterations = static_cast<int>(spec.get_int("iterations"));
  // parse_stage checks these already; a hand-built StageSpec could still carry anything.
  if (p.bits < 2 || p.bits > 4) fail("spec 'kvquant': key 'bits' = {} is not one of: 2, 3, 4", p.bits);
  if (!(p.outliers >= 0 && p.outliers <= 0.5)) fail("spec 'kvquant': key 'outliers' = {} must be in [0, 0.5]", p.outliers);
  if (p.sinks < 0) fail("spec 'kvquant': key 'sinks' = {} must be at least 0", p.sinks);
  if (p.iterations < 1) fail("spec 'kvquant': key 'iterations' = {} must be at least 1", p.iterations);
  if (spec.get("weight") != "uniform") fail("spec 'kvquant': key 'weight' = {} is not one of: uniform", spec.get("weight"));
  return p;
}

double kvquant_quantile(std::span<float> x, double q) {
  if (x.empty()) fail("kvquant: quantile of no values");
  // numpy's linear method: the value at position h = (n − 1)·q between its two order statistics.
  const std::size_t n = x.size();
  const double h = static_cast<double>(n - 1) * q;
  const auto below = static_cast<std::size_t>(std::floor(h));
  const auto at = [&](std::size_t k) { return static_cast<std::ptrdiff_t>(k); };
  double a = 0, b = 0;  // the order statistics `below` and `below + 1` (b = a at the top)
  if (const std::size_t high = n - below; high <= n / 16) {
    // A far upper tail (the outlier thresholds): the `high` largest by heap selection, about one
    // comparison a value, where nth_element takes several.
    std::partial_sort(x.begin(), x.begin() + at(high), x.end(), std::greater<>());
    a = x[high - 1], b = high >= 2 ? x[high - 2] : a;
  } else if (const std::size_t low = below + 2; low <= n / 16) {
    std::partial_sort(x.begin(), x.begin() + at(low), x.end());
    a = x[below], b = x[below + 1];
  } else {
    std::nth_element(x.begin(), x.begin() + at(below), x.end());
    a = x[below];
    b = below + 1 < n ? *std::min_element(x.begin() + at(below) + 1, x.end()) : a;
  }
  return a + (h - static_cast<double>(below)) * (b - a);
}

std::vector<double> kvquant_kmeans(std::span<const float> points, std::span<const float> weights, int k, int iterations) {
  if (points.empty()) fail("kvquant: no values to fit the codebook on");
  if (!weights.empty() && weights.size() != points.size())
    fail("kvquant: {} weights for {} points", weights.size(), points.size());
  const auto n = points.size();
  // Sorted once: in one dimension each cluster is a run of the sorted points, so a step is k
  // binary searches and k range sums (prefix sums in double).
  std::vector<std::uint32_t> order;
  std::vector<float> x(points.begin(), points.end()), w;
  if (weights.empty()) {
    sort_floats(x);
  } else {
    order.resize(n);
    std::iota(order.begin(), order.end(), 0u);
    std::stable_sort(order.begin(), order.end(), [&](auto a, auto b) { return points[a] < points[b]; });
    w.resize(n);
    for (std::size_t i = 0; i < n; ++i) x[i] = points[order[i]], w[i] = weights[order[i]];
  }
  // Prefix sums of the weights and weighted points, in double; unit weights sum to the count
  // exactly, so their prefix is not stored (a layer's pool is millions of points).
  std::vector<double> prefix_w(w.empty() ? 0 : n + 1, 0.0), sum_wx(n + 1, 0.0);
  const auto sum_w = [&](std::size_t i) { return w.empty() ? static_cast<double>(i) : prefix_w[i]; };
  double mean = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const double wi = w.empty() ? 1.0 : double{w[i]};
    if (!w.empty()) prefix_w[i + 1] = prefix_w[i] + wi;
    sum_wx[i + 1] = sum_wx[i] + wi * x[i];
    mean += x[i];
  }
  mean /= static_cast<double>(n);
  double variance = 0;  // sklearn's tolerance: tol · mean variance of the (unweighted) data
  for (const float v : x) variance += (v - mean) * (v - mean);
  const double tol = 1e-4 * variance / static_cast<double>(n);
  if (!(sum_w(n) > 0)) fail("kvquant: the codebook's points weigh {} in all", sum_w(n));

  std::vector<double> c(static_cast<std::size_t>(k));
  for (int i = 0; i < k; ++i) {
    // The first point whose cumulative weight reaches the target.
    const double target = (i + 0.5) / k * sum_w(n);
    const std::size_t at = w.empty() ? static_cast<std::size_t>(std::max(1.0, std::ceil(target))) - 1
                                     : static_cast<std::size_t>(std::lower_bound(prefix_w.begin() + 1, prefix_w.end(), target) -
                                                                (prefix_w.begin() + 1));
    c[static_cast<std::size_t>(i)] = x[std::min(at, n - 1)];
  }
  std::vector<std::size_t> end(static_cast<std::size_t>(k)), last_end;
  for (int step = 0; step < iterations; ++step) {
    // Point x goes to cluster i when it is no closer to the next larger centroid than to c[i]
    // (ties to the lower); the predicate is monotone along the sorted points, so each boundary is
    // a binary search. Of equal centroids the first takes the points (argmin's first index), the
    // others stay empty.
    std::size_t from = 0;
    for (int i = 0; i + 1 < k; ++i) {
      const double lo = c[static_cast<std::size_t>(i)];
      int next = i + 1;
      while (next < k && c[static_cast<std::size_t>(next)] == lo) ++next;
      if (i > 0 && c[static_cast<std::size_t>(i) - 1] == lo) {
        // a repeat of the centroid before it: empty
      } else if (next == k) {
        from = n;
      } else {
        const double hi = c[static_cast<std::size_t>(next)];
        const auto it = std::partition_point(x.begin() + static_cast<std::ptrdiff_t>(from), x.end(),
                                             [&](float v) { return std::abs(v - lo) <= std::abs(v - hi); });
        from = static_cast<std::size_t>(it - x.begin());
      }
      end[static_cast<std::size_t>(i)] = from;
    }
    end[static_cast<std::size_t>(k) - 1] = n;
    if (end == last_end) break;  // the assignment repeats: converged (sklearn's strict convergence)
    last_end = end;
    double shift = 0;
    for (std::size_t i = 0, a = 0; i < static_cast<std::size_t>(k); a = end[i], ++i) {
      const std::size_t b = end[i];
      const double weight = sum_w(b) - sum_w(a);
      if (b > a && weight > 0) {
        const double next = (sum_wx[b] - sum_wx[a]) / weight;
        shift += (next - c[i]) * (next - c[i]);
        c[i] = next;
      }
    }
    // Kept ascending: an empty cluster's centroid stays where it was and may now lie past a
    // neighbour that moved (equal centroids at the start do this).
    std::sort(c.begin(), c.end());
    if (shift <= tol) break;
  }
  return c;
}

namespace {

// Codes by thresholds. In an ascending codebook the entry nearest to v is the one after every
// midpoint (c_k + c_{k+1})/2 below v — v on a midpoint goes to the lower entry — and, of a run of
// equal entries, the first. The midpoints of fp16 entries are exact in double, so this is
// argmin_k |v − c_k| with ties to the lower index (round_to_nearest_pole_sim's argmin) in exact
// arithmetic: K − 1 branch-free comparisons instead of K distances.
class NearestCode {
 public:
  explicit NearestCode(std::span<const float> codebook) : first_(codebook.size()) {
    for (std::size_t k = 0; k < codebook.size(); ++k) {
      first_[k] = k > 0 && codebook[k] == codebook[k - 1] ? first_[k - 1] : static_cast<std::uint8_t>(k);
      if (k + 1 < codebook.size()) mid_.push_back((double{codebook[k]} + double{codebook[k + 1]}) / 2);
    }
  }
  std::uint32_t operator()(double v) const {
    std::size_t above = 0;
    for (const double m : mid_) above += v > m;
    return first_[above];
  }

 private:
  std::vector<double> mid_;
  std::vector<std::uint8_t> first_;
};

}  // namespace

KvquantPlan kvquant_plan(std::span<const float> x, QuantLayout layout, std::int64_t n, std::int64_t c,
                         std::int64_t sink_rows, double outliers, const std::string& what) {
  if (layout == QuantLayout::none) fail("{}: layout none is not quantized", what);
  if (static_cast<std::int64_t>(x.size()) != n * c) fail("{}: {} values for shape [{}, {}]", what, x.size(), n, c);
  if (sink_rows < 0 || sink_rows > n) fail("{}: {} sink rows of {}", what, sink_rows, n);
  if (n * c > std::int64_t{1} << 31) fail("{}: [{}, {}] is beyond int32 outlier indices", what, n, c);
  for (const float v : x)
    if (!std::isfinite(v)) fail("{}: non-finite values to quantize (beyond fp16's ±65504 is infinite at fp16)", what);
  KvquantPlan p;
  p.n = n, p.c = c, p.sink_rows = sink_rows, p.layout = layout;
  const std::int64_t coded = n - sink_rows;
  p.outlier.assign(static_cast<std::size_t>(n * c), 0);
  p.normalized.assign(static_cast<std::size_t>(coded * c), 0.0f);
  const double t = 1 - outliers / 2;  // SimQuant.quantize: t = 1 − (1 − sparsity_threshold)/2
  const auto at = [&](std::int64_t i, std::int64_t j) { return static_cast<std::size_t>((sink_rows + i) * c + j); };
  std::vector<float> line;
  const auto range_check = [&](float lo, float hi) {
    if (!std::isfinite(lo) || !std::isfinite(hi)) fail("{}: a range exceeds fp16", what);
  };
  if (layout == QuantLayout::per_channel) {
    // Keys: static per-channel thresholds (SimQuant.quantize's np.percentile over the tokens),
    // outliers strictly outside them (get_outliers), the thresholds the quantization range.
    p.lo.resize(static_cast<std::size_t>(c)), p.hi.resize(static_cast<std::size_t>(c));
    if (coded > 0) {
      // The coded rows column-major (one transpose), so each column's percentiles read it in order.
      using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
      const Eigen::MatrixXf columns = Eigen::Map<const RowMajor>(x.data() + sink_rows * c, coded, c);
      for (std::int64_t j = 0; j < c; ++j) {
        line.assign(columns.col(j).data(), columns.col(j).data() + coded);
        const float hi = to_fp16(kvquant_quantile(line, t)), lo = to_fp16(kvquant_quantile(line, 1 - t));
        range_check(lo, hi);
        p.lo[static_cast<std::size_t>(j)] = lo, p.hi[static_cast<std::size_t>(j)] = hi;
      }
    }
    std::vector<double> r(static_cast<std::size_t>(c)), zp(r.size());
    for (std::size_t j = 0; j < r.size(); ++j) r[j] = half_range(p.lo[j], p.hi[j]), zp[j] = midpoint(p.lo[j], p.hi[j]);
    for (std::int64_t i = 0; i < coded; ++i)
      for (std::int64_t j = 0; j < c; ++j) {
        const auto J = static_cast<std::size_t>(j);
        const float v = x[at(i, j)];
        if (v < p.lo[J] || v > p.hi[J]) {
          p.outlier[at(i, j)] = 1;
        } else if (r[J] > 0) {
          p.normalized[static_cast<std::size_t>(i * c + j)] = static_cast<float>((v - zp[J]) / r[J]);
        }
      }
  } else {
    // Values: per token, dynamic (get_outliers_dynamic: torch.quantile, outliers ≤ / ≥ the
    // thresholds; quant_fn_nuq_recon: the range is the min and max with outliers replaced by
    // the row's torch.median, the lower median).
    p.lo.resize(static_cast<std::size_t>(coded)), p.hi.resize(static_cast<std::size_t>(coded));
    for (std::int64_t i = 0; i < coded; ++i) {
      const float* row = x.data() + (sink_rows + i) * c;
      line.assign(row, row + c);
      float lo = *std::min_element(row, row + c), hi = *std::max_element(row, row + c);
      if (outliers > 0) {
        const double upper = kvquant_quantile(line, t), lower = kvquant_quantile(line, 1 - t);
        std::nth_element(line.begin(), line.begin() + (c - 1) / 2, line.end());
        const float median = line[static_cast<std::size_t>((c - 1) / 2)];
        lo = hi = median;
        for (std::int64_t j = 0; j < c; ++j) {
          if (row[j] <= lower || row[j] >= upper) {
            p.outlier[at(i, j)] = 1;
          } else {
            lo = std::min(lo, row[j]), hi = std::max(hi, row[j]);
          }
        }
      }
      lo = to_fp16(lo), hi = to_fp16(hi);
      range_check(lo, hi);
      p.lo[static_cast<std::size_t>(i)] = lo, p.hi[static_cast<std::size_t>(i)] = hi;
      const double r = half_range(lo, hi), zp = midpoint(lo, hi);
      if (r > 0)
        for (std::int64_t j = 0; j < c; ++j)
          if (!p.outlier[at(i, j)]) p.normalized[static_cast<std::size_t>(i * c + j)] = static_cast<float>((row[j] - zp) / r);
    }
  }
  return p;
}

void kvquant_inliers(const KvquantPlan& plan, std::vector<float>& out) {
  const std::int64_t coded = plan.n - plan.sink_rows;
  for (std::int64_t k = 0; k < coded * plan.c; ++k)
    if (!plan.outlier[static_cast<std::size_t>(plan.sink_rows * plan.c + k)]) out.push_back(plan.normalized[static_cast<std::size_t>(k)]);
}

std::vector<std::uint8_t> kvquant_pack(std::span<const float> x, const KvquantPlan& plan, std::span<const float> codebook,
                                       int bits) {
  if (static_cast<std::int64_t>(codebook.size()) != std::int64_t{1} << bits)
    fail("kvquant: a codebook of {} entries for {} bits", codebook.size(), bits);
  const std::int64_t n = plan.n, c = plan.c, s = plan.sink_rows, coded = n - s;
  const NearestCode nearest(codebook);
  std::vector<std::int32_t> index;
  for (std::int64_t k = 0; k < n * c; ++k)
    if (plan.outlier[static_cast<std::size_t>(k)]) index.push_back(static_cast<std::int32_t>(k));
  const auto m = static_cast<std::int64_t>(index.size());
  const auto o = offsets(plan.layout, n, c, s, m, bits);
  std::vector<std::uint8_t> out(static_cast<std::size_t>(o.total), 0);
  put_i32(out, 0, static_cast<std::int32_t>(s));
  put_i32(out, 4, static_cast<std::int32_t>(m));
  for (std::int64_t k = 0; k < s * c; ++k) put_fp16(out, o.sinks_at + 2 * k, x[static_cast<std::size_t>(k)]);
  for (std::size_t r = 0; r < plan.lo.size(); ++r) {
    put_fp16(out, o.range_at + 4 * static_cast<std::int64_t>(r), plan.lo[r]);
    put_fp16(out, o.range_at + 4 * static_cast<std::int64_t>(r) + 2, plan.hi[r]);
  }
  for (std::int64_t k = 0; k < coded * c; ++k) {
    if (plan.outlier[static_cast<std::size_t>(s * c + k)]) continue;  // code 0: the sparse value replaces it
    put_code(out, o.codes_at, k, bits, nearest(plan.normalized[static_cast<std::size_t>(k)]));
  }
  for (std::int64_t k = 0; k < m; ++k) {
    put_fp16(out, o.outlier_at + 2 * k, x[static_cast<std::size_t>(index[static_cast<std::size_t>(k)])]);
    put_i32(out, o.index_at + 4 * k, index[static_cast<std::size_t>(k)]);
  }
  return out;
}

void kvquant_unpack(std::span<const std::uint8_t> packed, QuantLayout layout, std::int64_t n, std::int64_t c,
                    std::span<const float> codebook, int bits, std::span<float> out) {
  if (packed.size() < 8) fail("kvquant: {} bytes is no packed form", packed.size());
  if (static_cast<std::int64_t>(out.size()) != n * c) fail("kvquant_unpack: {} values out for [{}, {}]", out.size(), n, c);
  if (static_cast<std::int64_t>(codebook.size()) != std::int64_t{1} << bits)
    fail("kvquant: a codebook of {} entries for {} bits", codebook.size(), bits);
  const std::int64_t s = get_i32(packed, 0), m = get_i32(packed, 4);
  if (s < 0 || s > n || m < 0 || m > n * c) fail("kvquant: {} sink rows and {} outliers for [{}, {}]", s, m, n, c);
  const auto o = offsets(layout, n, c, s, m, bits);
  if (static_cast<std::int64_t>(packed.size()) != o.total)
    fail("kvquant: {} bytes for a [{}, {}] tensor whose packed form takes {}", packed.size(), n, c, o.total);
  for (std::int64_t k = 0; k < s * c; ++k) out[static_cast<std::size_t>(k)] = get_fp16(packed, o.sinks_at + 2 * k);
  const std::int64_t ranges = layout == QuantLayout::per_channel ? c : n - s;
  std::vector<double> r(static_cast<std::size_t>(ranges)), zp(r.size());
  for (std::int64_t i = 0; i < ranges; ++i) {
    const float lo = get_fp16(packed, o.range_at + 4 * i), hi = get_fp16(packed, o.range_at + 4 * i + 2);
    r[static_cast<std::size_t>(i)] = half_range(lo, hi), zp[static_cast<std::size_t>(i)] = midpoint(lo, hi);
  }
  for (std::int64_t i = 0; i < n - s; ++i)
    for (std::int64_t j = 0; j < c; ++j) {
      const std::int64_t k = i * c + j;
      const auto at = static_cast<std::size_t>(layout == QuantLayout::per_channel ? j : i);
      const double v = codebook[get_code(packed, o.codes_at, k, bits)];
      out[static_cast<std::size_t>(s * c + k)] = static_cast<float>(v * r[at] + zp[at]);
    }
  for (std::int64_t k = 0; k < m; ++k) {
    const std::int32_t at = get_i32(packed, o.index_at + 4 * k);
    if (at < 0 || at >= n * c) fail("kvquant: outlier index {} outside [0, {})", at, n * c);
    out[static_cast<std::size_t>(at)] = get_fp16(packed, o.outlier_at + 2 * k);
  }
}

namespace {

// A dense per-head key quantized from the pre-RoPE keys: where its rows go on rebuild.
struct PreRopeHead {
  int layer = 0, head = 0;
  const StoredTensor* key = nullptr;    // values: the decoded pre-RoPE keys [n, D]
  const StoredTensor* index = nullptr;  // the rows' tokens (eviction); null: row i is token i
};

// The chain's stored form with each tensor quantized in place, plus the codebooks; the dense
// per-head keys rebuilt from their pre-RoPE decoding.
class KvquantCompressed final : public Compressed {
 public:
  KvquantCompressed(std::unique_ptr<Compressed> inner, std::vector<StoredTensor> codebooks, std::vector<PreRopeHead> heads,
                    const CacheShape& shape, nlohmann::json notes)
      : inner_(std::move(inner)), codebooks_(std::move(codebooks)), heads_(std::move(heads)), shape_(shape),
        notes_(std::move(notes)) {}

  std::vector<StoredTensor*> stored() override {
    auto out = inner_->stored();
    for (auto& t : codebooks_) out.push_back(&t);
    return out;
  }

  LayerKV reconstruct(int layer) const override {
    auto out = inner_->reconstruct(layer);
    const int H = shape_.kv_heads, D = shape_.head_dim;
    for (const auto& ph : heads_) {
      if (ph.layer != layer) continue;
      const auto n = ph.key->shape.at(0);
      const auto tokens = ph.index ? ph.index->unpack_indices() : std::vector<std::int32_t>{};
      for (std::int64_t i = 0; i < n; ++i) {
        const std::int64_t t = ph.index ? std::int64_t{tokens.at(static_cast<std::size_t>(i))} : i;
        std::copy_n(ph.key->values.begin() + i * D, D, out.key.data.begin() + (t * H + ph.head) * D);
      }
    }
    return out;
  }

  nlohmann::json notes() const override {
    auto n = inner_->notes();
    n["kvquant"] = notes_;
    return n;
  }

 private:
  std::unique_ptr<Compressed> inner_;
  std::vector<StoredTensor> codebooks_;
  std::vector<PreRopeHead> heads_;
  CacheShape shape_;
  nlohmann::json notes_;
};

// One tensor to quantize and what its rows are.
struct Job {
  StoredTensor* tensor = nullptr;
  std::int64_t sink_rows = 0;
  bool pre_rope = false;
  KvquantPlan plan;
};

class Kvquant final : public QuantizerStage {
 public:
  explicit Kvquant(KvquantParams p) : p_(p) {}

  void quantize(const std::vector<StoredTensor*>&) const override {
    fail("kvquant stores one codebook per layer beside the codes and quantizes keys before RoPE from the cache: it "
         "runs in a compressor chain (compress_chain)");
  }

  std::unique_ptr<Compressed> apply(const CompressContext& ctx, std::unique_ptr<Compressed> rep) const override {
    const auto& s = ctx.cache.shape();
    const int H = s.kv_heads, D = s.head_dim;
    const auto stored = rep->stored();
    std::map<std::pair<int, int>, const StoredTensor*> index;  // dense per-head token indices
    for (const StoredTensor* t : stored) {
      int l = 0, h = 0;
      std::string leaf;
      if (parse_head_tensor(t->name, l, h, leaf) && leaf == "index") index[{l, h}] = t;
    }
    // Jobs by codebook: (first name component, layout).
    std::map<std::pair<std::string, QuantLayout>, std::vector<Job>> groups;
    std::vector<PreRopeHead> heads;
    int pre_rope_layer = -1;
    FloatTensor pre_rope;  // that layer's pre-RoPE keys [T, H, D]
    for (StoredTensor* t : stored) {
      if (t->layout == QuantLayout::none) continue;
      if (t->shape.size() != 2 || static_cast<std::int64_t>(t->values.size()) != t->shape[0] * t->shape[1])
        fail("kvquant: stored tensor {} is not an [n, c] matrix of its values", t->name);
      Job job;
      job.tensor = t;
      const std::int64_t n = t->shape[0];
      int l = 0, h = 0;
      std::string leaf;
      const bool head_tensor = parse_head_tensor(t->name, l, h, leaf) && (leaf == "key" || leaf == "value");
      const auto idx = head_tensor && index.count({l, h}) ? index.at({l, h}) : nullptr;
      std::vector<std::int32_t> tokens;
      if (idx) tokens = idx->unpack_indices();
      // Sink rows: the stored rows of tokens < sinks (a prefix, as rows are in token order).
      if (idx) {
        job.sink_rows = std::lower_bound(tokens.begin(), tokens.end(), p_.sinks) - tokens.begin();
      } else if (t->token_rows) {
        job.sink_rows = std::min(p_.sinks, n);
      }
      if (head_tensor && leaf == "key" && t->layout == QuantLayout::per_channel && t->shape[1] == D && l < s.layers &&
          h < H && (idx ? static_cast<std::int64_t>(tokens.size()) == n : n == s.tokens)) {
        // The authors quantize k_proj's output: the pre-RoPE keys, at the model's fp16.
        if (l != pre_rope_layer) pre_rope = ctx.cache.layer(l, Part::key), pre_rope_layer = l;
        for (std::int64_t i = 0; i < n; ++i) {
          const std::int64_t tok = idx ? std::int64_t{tokens[static_cast<std::size_t>(i)]} : i;
          for (int d = 0; d < D; ++d)
            t->values[static_cast<std::size_t>(i * D + d)] = to_fp16(pre_rope.data[static_cast<std::size_t>((tok * H + h) * D + d)]);
        }
        job.pre_rope = true;
        heads.push_back({l, h, t, idx});
      }
      const auto slash = t->name.find('/');
      groups[{t->name.substr(0, slash), t->layout}].push_back(std::move(job));
    }

    std::vector<StoredTensor> codebooks;
    std::int64_t outliers = 0, elements = 0, sink_values = 0;
    const auto K = std::int64_t{1} << p_.bits;
    for (auto& group : groups) {
      const auto& key = group.first;
      auto& jobs = group.second;  // a plain reference: the lambdas below capture it (clang 14 cannot capture bindings)
      // One codebook's tensors at a time: plans hold a normalized copy of each tensor.
      // The tensors are independent until the codebook and after it: one thread each (a layer's
      // heads), the pool concatenated in the jobs' order.
      const auto each_job = [&](const std::function<void(Job&)>& body) {
        core::parallel_for(static_cast<std::int64_t>(jobs.size()), [&](std::int64_t i) { body(jobs[static_cast<std::size_t>(i)]); });
      };
      std::vector<std::vector<float>> inliers(jobs.size());
      each_job([&](Job& job) {
        const StoredTensor& t = *job.tensor;
        job.plan = kvquant_plan(t.values, t.layout, t.shape[0], t.shape[1], job.sink_rows, p_.outliers,
                                fmt::format("kvquant: stored tensor {}", t.name));
        kvquant_inliers(job.plan, inliers[static_cast<std::size_t>(&job - jobs.data())]);
      });
      std::vector<float> pool;
      for (auto& part : inliers) pool.insert(pool.end(), part.begin(), part.end()), std::vector<float>().swap(part);
      std::vector<float> codebook(static_cast<std::size_t>(K), 0.0f);
      if (!pool.empty()) {
        const auto centroids = kvquant_kmeans(pool, {}, static_cast<int>(K), p_.iterations);
        for (std::size_t i = 0; i < centroids.size(); ++i) codebook[i] = to_fp16(centroids[i]);
        std::sort(codebook.begin(), codebook.end());  // fp16 rounding is monotone: a no-op, kept for the invariant
      }
      pool = {};
      each_job([&](Job& job) {
        StoredTensor& t = *job.tensor;
        t.packed = kvquant_pack(t.values, job.plan, codebook, p_.bits);
        kvquant_unpack(t.packed, t.layout, t.shape[0], t.shape[1], codebook, p_.bits, t.values);  // the values are what the bytes give back
      });
      for (auto& job : jobs) {
        StoredTensor& t = *job.tensor;
        t.format = fmt::format("kvquant{} s{} sinks{}{}", p_.bits, format_real(p_.outliers), job.sink_rows,
                               job.pre_rope ? " pre-rope" : "");
        t.layout = QuantLayout::none;  // quantized data is not quantized again by a later stage
        for (const auto o : job.plan.outlier) outliers += o;
        elements += t.shape[0] * t.shape[1];
        sink_values += job.sink_rows * t.shape[1];
        job.plan = KvquantPlan{};
      }
      auto book = StoredTensor::fp16(fmt::format("{}/kvquant_codebook_{}", key.first,
                                                 key.second == QuantLayout::per_channel ? "per_channel" : "per_token"), {K},
                                     codebook, QuantLayout::none, false);
      codebooks.push_back(std::move(book));
    }
    std::vector<StoredTensor*> fresh;
    for (auto& t : codebooks) fresh.push_back(&t);
    pack_fp16_storage(fresh);  // the centroids are fp16 already: packing gives them back unchanged
    nlohmann::json notes{{"bits", p_.bits},
                         {"codebooks", codebooks.size()},
                         {"outlier_fraction", elements > 0 ? static_cast<double>(outliers) / static_cast<double>(elements) : 0.0},
                         {"sink_fraction", elements > 0 ? static_cast<double>(sink_values) / static_cast<double>(elements) : 0.0},
                         {"pre_rope_key_heads", heads.size()}};
    return std::make_unique<KvquantCompressed>(std::move(rep), std::move(codebooks), std::move(heads), s, std::move(notes));
  }

 private:
  KvquantParams p_;
};

}  // namespace

MethodDef kvquant_method() {
  MethodDef m;
  m.name = "kvquant";
  m.kind = StageKind::quantizer;
  m.help =
      "KVQuant (docs/methods/kvquant.md; arXiv 2401.18079, SqueezeAILab/KVQuant quant/): non-uniform b-bit "
      "quantization of what is stored, keys per channel before RoPE (percentile thresholds over the tokens), values per "
      "token (quantile thresholds, median-replaced min/max); a fraction `outliers` kept exact at fp16 with int32 indices; "
      "the first `sinks` tokens at fp16; one fp16 codebook of 2^b entries per layer and part, a k-means over the "
      "normalized inliers of the cache being compressed";
  m.params = {
      {"bits", ParamType::choice, "4", "bits per code: 2^b codebook entries (authors' nuq4; 2 and 3 in the paper)", {"2", "3", "4"}},
      {"outliers", ParamType::real, "0.01", "fraction s kept exact, s/2 at each end (authors' --sparsity-threshold 0.99)", {}, 0, 0.5},
      {"sinks", ParamType::integer, "1", "first tokens kept at fp16 (authors' --first_few_fp16 1; their default -1 is 0 here)", {}, 0, 1 << 30},
      {"iterations", ParamType::integer, "50", "k-means steps at most (authors' sklearn KMeans max_iter=50)", {}, 1, 10000},
      {"weight", ParamType::choice, "uniform",
       "k-means sample weights: uniform (the authors' fit without --fisher; dumps hold no gradients for their Fisher "
       "weights)",
       {"uniform"}},
  };
  m.make_quantizer = [](const StageSpec& spec) -> std::unique_ptr<QuantizerStage> {
    return std::make_unique<Kvquant>(kvquant_params(spec));
  };
  m.layer_local = true;  // a layer's codebooks and thresholds come from that layer's tensors alone
  return m;
}

}  // namespace kvlab::compressors
