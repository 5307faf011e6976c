// turboquant: TurboQuant_mse / TurboQuant_prod (arXiv 2504.19874, Algorithms 1 and 2); the
// stored form and rules are in turboquant.h, the sources of every knob in docs/methods/turboquant.md.
#include "compressors/methods/turboquant.h"

#include <fmt/format.h>

#include <Eigen/Core>
#include <Eigen/QR>

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <mutex>
#include <numbers>
#include <numeric>
#include <random>
#include <tuple>

#include "compressors/packed_bytes.h"
#include "core/error.h"

namespace kvlab::compressors {
namespace {

constexpr int kMaxBits = 4;  // the paper's range (1.5–4 bits; fractional ones by the outlier split)

// ---- the codebook ----------------------------------------------------------------------------

// In x = sin θ the density (1 − x²)^((d−3)/2) dx is cos^n θ dθ, n = d − 2. Its mass from 0 to x,
// I_n(x) = ∫_0^asin(x) cos^n θ dθ, by the reduction formula I_n = [cos^(n−1)θ·sin θ + (n − 1)·I_(n−2)]/n
// from I_0 = asin x, I_1 = x: exact up to rounding, and stable upwards (each step scales the
// earlier error by (n − 1)/n). Powers of 1 − x² as exp(k·log1p(−x²)), which keeps them accurate to
// a few ulps for the large k of large d (pow(1 − x², k) would carry k times the rounding of 1 − x²).
double mass_to(int d, double x) {
  const int n = d - 2;
  const double log_c2 = std::log1p(-x * x);  // log cos²θ; −inf at x = ±1
  double lower = std::asin(x), upper = x;     // I_0, I_1
  double i_n = n % 2 ? upper : lower;
  for (int k = n % 2 ? 3 : 2; k <= n; k += 2) {
    const double cos_pow = std::exp((k - 1) / 2.0 * log_c2);  // cos^(k−1)θ
    i_n = (cos_pow * x + (k - 1) * i_n) / k;
  }
  return i_n;
}

// ∫ x (1 − x²)^((d−3)/2) dx over [a, b], in closed form (the same normalization as mass_to).
double cell_moment(int d, double a, double b) {
  const auto g = [d](double x) { return std::exp((d - 1) / 2.0 * std::log1p(-x * x)); };
  return (g(a) - g(b)) / (d - 1);
}

std::vector<double> solve_lloyd_max(int d, int bits) {
  const int k = 1 << bits;
  const double sigma = 1 / std::sqrt(double(d)), spread = std::min(3 * sigma, 1.0);  // inside [−1, 1] for small d
  std::vector<double> c(k), edge(k + 1), mass(k + 1);
  for (int i = 0; i < k; ++i) c[i] = spread * (-1 + (2 * i + 1.0) / k);
  for (int iter = 0; iter < 100000; ++iter) {
    edge[0] = -1, edge[k] = 1;
    for (int i = 1; i < k; ++i) edge[i] = (c[i - 1] + c[i]) / 2;
    for (int i = 0; i <= k; ++i) mass[i] = mass_to(d, edge[i]);
    double shift = 0;
    for (int i = 0; i < k; ++i) {
      const double m = mass[i + 1] - mass[i];
      if (!(m > 0)) continue;  // a cell too far out to hold any mass in double: its centroid stays
      const double next = cell_moment(d, edge[i], edge[i + 1]) / m;
      shift = std::max(shift, std::abs(next - c[i]));
      c[i] = next;
    }
    if (shift <= 1e-13 * sigma) return c;
  }
  fail("turboquant: the Lloyd–Max codebook for d = {}, {} bits did not converge", d, bits);
}

// ---- seeded matrices -------------------------------------------------------------------------

// d² i.i.d. N(0, 1), column-major, by Box–Muller on 53-bit uniforms (std::normal_distribution is
// implementation-defined; this is the same everywhere). `stream` separates Π from S.
Eigen::MatrixXd gaussian_matrix(int d, std::uint64_t seed, std::uint64_t stream) {
  std::seed_seq seq{seed & 0xffffffffu, seed >> 32, static_cast<std::uint64_t>(d), stream};
  std::mt19937_64 rng(seq);
  const auto uniform = [&] { return (static_cast<double>(rng() >> 11) + 0.5) * 0x1.0p-53; };  // (0, 1)
  Eigen::MatrixXd g(d, d);
  for (Eigen::Index e = 0; e < g.size(); e += 2) {
    const double r = std::sqrt(-2 * std::log(uniform())), t = 2 * std::numbers::pi * uniform();
    g.data()[e] = r * std::cos(t);
    if (e + 1 < g.size()) g.data()[e + 1] = r * std::sin(t);
  }
  return g;
}

Eigen::MatrixXd haar_rotation(int d, std::uint64_t seed) {
  const Eigen::HouseholderQR<Eigen::MatrixXd> qr(gaussian_matrix(d, seed, 1));
  Eigen::MatrixXd q = qr.householderQ();
  // Q·diag(sign(R_ii)): the sign fix that makes Q Haar-distributed (Mezzadri 2007).
  for (int j = 0; j < d; ++j)
    if (qr.matrixQR()(j, j) < 0) q.col(j) = -q.col(j);
  return q;
}

// A cache of values by key, thread-safe; when it holds `limit` entries it starts afresh (a sweep
// over many seeds must not keep every d × d matrix it ever built; a caller's shared_ptr stays valid).
template <class Value>
class Cache {
 public:
  explicit Cache(std::size_t limit) : limit_(limit) {}
  template <class Make>
  std::shared_ptr<const Value> get(std::tuple<int, std::uint64_t> key, Make make) {
    std::lock_guard lock(mutex_);
    if (auto it = map_.find(key); it != map_.end()) return it->second;
    if (map_.size() >= limit_) map_.clear();
    return map_[key] = std::make_shared<const Value>(make());
  }

 private:
  std::size_t limit_;
  std::mutex mutex_;
  std::map<std::tuple<int, std::uint64_t>, std::shared_ptr<const Value>> map_;
};

void check_width(std::int64_t c) {
  if (c < 2 || c > 65536) fail("turboquant: rows of {} values; vectors must have 2 to 65536 coordinates", c);
}

struct Offsets {
  std::int64_t norms = 0, gammas = 0, codes = 0, signs = 0, total = 0;
};
Offsets offsets(std::int64_t n, std::int64_t c, const TurboquantCoding& coding) {
  const bool prod = coding.variant == TurboquantVariant::prod;
  Offsets o;
  o.gammas = 2 * n;
  o.codes = o.gammas + (prod ? 2 * n : 0);
  o.signs = o.codes + (n * c * coding.mse_bits() + 7) / 8;
  o.total = o.signs + (prod ? (n * c + 7) / 8 : 0);
  return o;
}

void check_coding(const TurboquantCoding& coding) {
  const int lo = coding.variant == TurboquantVariant::prod ? 2 : 1;
  if (coding.bits < lo || coding.bits > kMaxBits)
    fail("turboquant: {} bits for the {} variant; allowed {}..{}", coding.bits,
         coding.variant == TurboquantVariant::prod ? "prod" : "mse", lo, kMaxBits);
}

}  // namespace

const std::vector<double>& turboquant_codebook(int d, int bits) {
  if (d < 2 || bits < 1 || bits > 8) fail("turboquant_codebook: d = {} (≥ 2), bits = {} (1..8)", d, bits);
  static Cache<std::vector<double>> books(1 << 20);  // never cleared: a codebook is 2^b doubles
  return *books.get({d, bits}, [&] { return solve_lloyd_max(d, bits); });
}

std::shared_ptr<const Eigen::MatrixXd> turboquant_rotation(int d, std::uint64_t seed) {
  static Cache<Eigen::MatrixXd> rotations(16);
  return rotations.get({d, seed}, [&] { return haar_rotation(d, seed); });
}

std::shared_ptr<const Eigen::MatrixXd> turboquant_sketch(int d, std::uint64_t seed) {
  static Cache<Eigen::MatrixXd> sketches(16);
  return sketches.get({d, seed}, [&] { return gaussian_matrix(d, seed, 2); });
}

std::int64_t turboquant_bytes(std::int64_t n, std::int64_t c, const TurboquantCoding& coding) {
  return offsets(n, c, coding).total;
}

std::vector<std::uint8_t> turboquant_pack(std::span<const float> x, std::int64_t n, std::int64_t c,
                                          const TurboquantCoding& coding, std::string_view what) {
  check_coding(coding);
  check_width(c);
  if (static_cast<std::int64_t>(x.size()) != n * c) fail("{}: {} values for shape [{}, {}]", what, x.size(), n, c);
  const int d = static_cast<int>(c), m = coding.mse_bits();
  const bool prod = coding.variant == TurboquantVariant::prod;
  const auto& book = turboquant_codebook(d, m);
  std::vector<double> threshold(book.size() - 1);
  for (std::size_t i = 0; i + 1 < book.size(); ++i) threshold[i] = (book[i] + book[i + 1]) / 2;
  const auto rotation = turboquant_rotation(d, coding.seed);
  const auto sketch = prod ? turboquant_sketch(d, coding.seed) : nullptr;
  const Eigen::MatrixXd& pi = *rotation;
  const Offsets o = offsets(n, c, coding);
  std::vector<std::uint8_t> out(static_cast<std::size_t>(o.total), 0);

  // Rows in blocks, so Π·u is one matrix product per block.
  constexpr std::int64_t block = 256;
  for (std::int64_t r0 = 0; r0 < n; r0 += block) {
    const std::int64_t rows = std::min(block, n - r0);
    Eigen::MatrixXd xs = Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(
                             x.data() + r0 * c, rows, c).cast<double>().transpose();  // [d, rows]
    if (!xs.allFinite()) fail("{}: non-finite values to quantize", what);
    Eigen::VectorXd nu(rows);
    Eigen::MatrixXd u = xs;
    for (std::int64_t i = 0; i < rows; ++i) {
      const double norm = xs.col(i).norm();
      nu(i) = to_fp16(norm);
      if (!std::isfinite(nu(i))) fail("{}: row {} has norm {} beyond fp16", what, r0 + i, norm);
      put_fp16(out, o.norms + 2 * (r0 + i), float(nu(i)));
      u.col(i) = norm > 0 ? Eigen::VectorXd(xs.col(i) / norm) : Eigen::VectorXd::Zero(d);
    }
    const Eigen::MatrixXd y = pi * u;  // rotated unit vectors, [d, rows]
    Eigen::MatrixXd centroid(d, rows);
    for (std::int64_t i = 0; i < rows; ++i)
      for (int j = 0; j < d; ++j) {
        // The number of thresholds strictly below y_j: the nearest centroid, a tie to the lower.
        const auto code = std::lower_bound(threshold.begin(), threshold.end(), y(j, i)) - threshold.begin();
        put_code(out, o.codes, (r0 + i) * c + j, m, static_cast<std::uint32_t>(code));
        centroid(j, i) = book[code];
      }
    if (!prod) continue;
    // Algorithm 2: the residual of the MSE rebuild (at the stored fp16 ν, what decoding gives).
    const Eigen::MatrixXd r = xs - (pi.transpose() * centroid) * nu.asDiagonal();
    const Eigen::MatrixXd sr = *sketch * r;
    for (std::int64_t i = 0; i < rows; ++i) {
      put_fp16(out, o.gammas + 2 * (r0 + i), float(r.col(i).norm()));
      for (int j = 0; j < d; ++j)
        if (sr(j, i) >= 0) put_code(out, o.signs, (r0 + i) * c + j, 1, 1);
    }
  }
  return out;
}

void turboquant_unpack(std::span<const std::uint8_t> packed, std::int64_t n, std::int64_t c,
                       const TurboquantCoding& coding, std::span<float> out) {
  check_coding(coding);
  check_width(c);
  const Offsets o = offsets(n, c, coding);
  if (static_cast<std::int64_t>(packed.size()) != o.total || static_cast<std::int64_t>(out.size()) != n * c)
    fail("turboquant: {} bytes for a [{}, {}] tensor whose packed form takes {}", packed.size(), n, c, o.total);
  const int d = static_cast<int>(c), m = coding.mse_bits();
  const bool prod = coding.variant == TurboquantVariant::prod;
  const auto& book = turboquant_codebook(d, m);
  const auto rotation = turboquant_rotation(d, coding.seed);
  const auto sketch = prod ? turboquant_sketch(d, coding.seed) : nullptr;
  const Eigen::MatrixXd& pi = *rotation;
  const double qjl_scale = std::sqrt(std::numbers::pi / 2) / d;
  constexpr std::int64_t block = 256;
  for (std::int64_t r0 = 0; r0 < n; r0 += block) {
    const std::int64_t rows = std::min(block, n - r0);
    Eigen::MatrixXd centroid(d, rows), sign(prod ? d : 0, prod ? rows : 0);
    Eigen::VectorXd nu(rows), gamma(prod ? rows : 0);
    for (std::int64_t i = 0; i < rows; ++i) {
      nu(i) = get_fp16(packed, o.norms + 2 * (r0 + i));
      for (int j = 0; j < d; ++j) centroid(j, i) = book[get_code(packed, o.codes, (r0 + i) * c + j, m)];
      if (!prod) continue;
      gamma(i) = get_fp16(packed, o.gammas + 2 * (r0 + i)) * qjl_scale;
      for (int j = 0; j < d; ++j) sign(j, i) = get_code(packed, o.signs, (r0 + i) * c + j, 1) ? 1.0 : -1.0;
    }
    Eigen::MatrixXd rebuilt = (pi.transpose() * centroid) * nu.asDiagonal();
    if (prod) rebuilt += (sketch->transpose() * sign) * gamma.asDiagonal();
    Eigen::Map<Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(out.data() + r0 * c, rows, c) =
        rebuilt.transpose().cast<float>();
  }
}

std::int64_t turboquant_outliers(double bits, std::int64_t c) {
  return std::llround((bits - std::floor(bits)) * static_cast<double>(c));
}

TurboquantCoding turboquant_outlier_coding(const TurboquantCoding& regular) {
  return {regular.variant, regular.bits + 1, regular.seed ^ kTurboquantOutlierSeedMix};
}

namespace {

struct SplitLayout {
  std::int64_t groups = 0, index_bytes = 0, outlier_at = 0, regular_at = 0, total = 0;
};
SplitLayout split_layout(std::int64_t n, std::int64_t c, std::int64_t o, const TurboquantCoding& regular) {
  if (o < 2 || c - o < 2)
    fail("turboquant: {} outlier channels of {}: each of the two instances needs at least 2 coordinates", o, c);
  SplitLayout l;
  l.groups = (n + kTurboquantOutlierGroup - 1) / kTurboquantOutlierGroup;
  l.index_bytes = c <= 256 ? 1 : 2;
  l.outlier_at = l.groups * o * l.index_bytes;
  l.regular_at = l.outlier_at + turboquant_bytes(n, o, turboquant_outlier_coding(regular));
  l.total = l.regular_at + turboquant_bytes(n, c - o, regular);
  return l;
}

}  // namespace

std::int64_t turboquant_split_bytes(std::int64_t n, std::int64_t c, std::int64_t o, const TurboquantCoding& regular) {
  return split_layout(n, c, o, regular).total;
}

std::vector<std::uint8_t> turboquant_split_pack(std::span<const float> x, std::int64_t n, std::int64_t c, std::int64_t o,
                                                const TurboquantCoding& regular, std::string_view what) {
  check_width(c);
  if (static_cast<std::int64_t>(x.size()) != n * c) fail("{}: {} values for shape [{}, {}]", what, x.size(), n, c);
  const SplitLayout l = split_layout(n, c, o, regular);
  std::vector<std::uint8_t> out(static_cast<std::size_t>(l.total), 0);
  std::vector<float> outlier(static_cast<std::size_t>(n * o)), rest(static_cast<std::size_t>(n * (c - o)));
  std::vector<int> order(static_cast<std::size_t>(c));
  std::vector<double> norm2(static_cast<std::size_t>(c));
  std::vector<char> is_outlier(static_cast<std::size_t>(c));
  for (std::int64_t g = 0; g < l.groups; ++g) {
    const std::int64_t r0 = g * kTurboquantOutlierGroup, r1 = std::min(n, r0 + kTurboquantOutlierGroup);
    // QJL's rule: the channels of largest norm over the group's rows (torch.topk of the norms), ties to the lower.
    std::fill(norm2.begin(), norm2.end(), 0.0);
    for (std::int64_t i = r0; i < r1; ++i)
      for (std::int64_t j = 0; j < c; ++j) norm2[static_cast<std::size_t>(j)] += double{x[static_cast<std::size_t>(i * c + j)]} * x[static_cast<std::size_t>(i * c + j)];
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return norm2[static_cast<std::size_t>(a)] > norm2[static_cast<std::size_t>(b)]; });
    std::fill(is_outlier.begin(), is_outlier.end(), 0);
    for (std::int64_t k = 0; k < o; ++k) is_outlier[static_cast<std::size_t>(order[static_cast<std::size_t>(k)])] = 1;
    std::int64_t k = 0;
    for (std::int64_t j = 0; j < c; ++j) {
      if (!is_outlier[static_cast<std::size_t>(j)]) continue;
      const std::int64_t at = (g * o + k++) * l.index_bytes;
      out[static_cast<std::size_t>(at)] = static_cast<std::uint8_t>(j & 0xff);
      if (l.index_bytes == 2) out[static_cast<std::size_t>(at + 1)] = static_cast<std::uint8_t>(j >> 8);
    }
    for (std::int64_t i = r0; i < r1; ++i) {
      std::int64_t a = 0, b = 0;  // sub-vectors in ascending channel order
      for (std::int64_t j = 0; j < c; ++j) {
        const float v = x[static_cast<std::size_t>(i * c + j)];
        if (is_outlier[static_cast<std::size_t>(j)]) outlier[static_cast<std::size_t>(i * o + a++)] = v;
        else rest[static_cast<std::size_t>(i * (c - o) + b++)] = v;
      }
    }
  }
  const auto outlier_packed = turboquant_pack(outlier, n, o, turboquant_outlier_coding(regular), what);
  const auto rest_packed = turboquant_pack(rest, n, c - o, regular, what);
  std::copy(outlier_packed.begin(), outlier_packed.end(), out.begin() + l.outlier_at);
  std::copy(rest_packed.begin(), rest_packed.end(), out.begin() + l.regular_at);
  return out;
}

void turboquant_split_unpack(std::span<const std::uint8_t> packed, std::int64_t n, std::int64_t c, std::int64_t o,
                             const TurboquantCoding& regular, std::span<float> out) {
  check_width(c);
  const SplitLayout l = split_layout(n, c, o, regular);
  if (static_cast<std::int64_t>(packed.size()) != l.total || static_cast<std::int64_t>(out.size()) != n * c)
    fail("turboquant: {} bytes for a [{}, {}] tensor whose split form ({} outlier channels) takes {}", packed.size(), n,
         c, o, l.total);
  std::vector<float> outlier(static_cast<std::size_t>(n * o)), rest(static_cast<std::size_t>(n * (c - o)));
  turboquant_unpack(packed.subspan(static_cast<std::size_t>(l.outlier_at), static_cast<std::size_t>(l.regular_at - l.outlier_at)),
                    n, o, turboquant_outlier_coding(regular), outlier);
  turboquant_unpack(packed.subspan(static_cast<std::size_t>(l.regular_at)), n, c - o, regular, rest);
  std::vector<char> is_outlier(static_cast<std::size_t>(c));
  for (std::int64_t g = 0; g < l.groups; ++g) {
    std::fill(is_outlier.begin(), is_outlier.end(), 0);
    std::int64_t last = -1;
    for (std::int64_t k = 0; k < o; ++k) {
      const std::int64_t at = (g * o + k) * l.index_bytes;
      const std::int64_t j = packed[static_cast<std::size_t>(at)] | (l.index_bytes == 2 ? packed[static_cast<std::size_t>(at + 1)] << 8 : 0);
      if (j <= last || j >= c) fail("turboquant: outlier channels of group {} not ascending in [0, {})", g, c);
      is_outlier[static_cast<std::size_t>(j)] = 1, last = j;
    }
    const std::int64_t r0 = g * kTurboquantOutlierGroup, r1 = std::min(n, r0 + kTurboquantOutlierGroup);
    for (std::int64_t i = r0; i < r1; ++i) {
      std::int64_t a = 0, b = 0;
      for (std::int64_t j = 0; j < c; ++j)
        out[static_cast<std::size_t>(i * c + j)] = is_outlier[static_cast<std::size_t>(j)]
                                                        ? outlier[static_cast<std::size_t>(i * o + a++)]
                                                        : rest[static_cast<std::size_t>(i * (c - o) + b++)];
    }
  }
}

TurboquantParams turboquant_params(const StageSpec& spec) {
  TurboquantParams p;
  p.key_bits = spec.get_real("kbits");
  p.value_bits = spec.get_real("vbits");
  p.key_variant = spec.get("variant") == "mse" ? TurboquantVariant::mse : TurboquantVariant::prod;
  p.seed = static_cast<std::uint64_t>(spec.get_int("seed"));
  // parse_stage checks these already (resolve below); a hand-built StageSpec could carry anything.
  const int key_lo = p.key_variant == TurboquantVariant::prod ? 2 : 1;
  if (!(p.key_bits >= key_lo && p.key_bits <= kMaxBits))
    fail("spec 'turboquant': key 'kbits' = {} must be in {}..{} for variant={}", p.key_bits, key_lo, kMaxBits,
         spec.get("variant"));
  if (!(p.value_bits >= 1 && p.value_bits <= kMaxBits))
    fail("spec 'turboquant': key 'vbits' = {} must be in 1..{}", p.value_bits, kMaxBits);
  return p;
}

TurboquantCoding turboquant_coding(QuantLayout layout, const TurboquantParams& p) {
  if (layout == QuantLayout::per_channel) return {p.key_variant, static_cast<int>(std::floor(p.key_bits)), p.seed};
  return {TurboquantVariant::mse, static_cast<int>(std::floor(p.value_bits)), p.seed};
}

void turboquant_quantize_tensor(StoredTensor& t, const TurboquantParams& p) {
  if (t.layout == QuantLayout::none) return;
  if (t.shape.size() != 2)
    fail("turboquant: stored tensor {} has {} dimensions; quantizable tensors are [n, c]", t.name, t.shape.size());
  const std::int64_t n = t.shape[0], c = t.shape[1];
  if (static_cast<std::int64_t>(t.values.size()) != n * c)
    fail("turboquant: stored tensor {} holds {} values for shape [{}, {}]", t.name, t.values.size(), n, c);
  const auto coding = turboquant_coding(t.layout, p);
  const double bits = t.layout == QuantLayout::per_channel ? p.key_bits : p.value_bits;
  const auto what = fmt::format("turboquant: stored tensor {}", t.name);
  const char* variant = coding.variant == TurboquantVariant::prod ? "prod" : "mse";
  if (bits == std::floor(bits)) {
    t.packed = turboquant_pack(t.values, n, c, coding, what);
    turboquant_unpack(t.packed, n, c, coding, t.values);  // the values are what the bytes give back
    t.format = fmt::format("turboquant-{}{}", variant, coding.bits);
  } else {
    const std::int64_t o = turboquant_outliers(bits, c);
    if (o < 2 || c - o < 2)
      fail("{}: key '{}' = {} gives round({}·{}) = {} outlier channels; the split needs 2 to {} of its {} channels",
           what, t.layout == QuantLayout::per_channel ? "kbits" : "vbits", bits, bits - std::floor(bits), c, o, c - 2, c);
    t.packed = turboquant_split_pack(t.values, n, c, o, coding, what);
    turboquant_split_unpack(t.packed, n, c, o, coding, t.values);
    t.format = fmt::format("turboquant-{}{}+{}x{}", variant, coding.bits, o, coding.bits + 1);
  }
  t.layout = QuantLayout::none;  // quantized data is not quantized again by a later stage
}

namespace {

class Turboquant final : public QuantizerStage {
 public:
  explicit Turboquant(TurboquantParams p) : p_(p) {}
  void quantize(const std::vector<StoredTensor*>& tensors) const override {
    for (StoredTensor* t : tensors)
      if (t) turboquant_quantize_tensor(*t, p_);
  }

 private:
  TurboquantParams p_;
};

}  // namespace

MethodDef turboquant_method() {
  MethodDef m;
  m.name = "turboquant";
  m.kind = StageKind::quantizer;
  m.help =
      "TurboQuant (arXiv 2504.19874; docs/methods/turboquant.md): each stored row (a token's key or value of one "
      "head) is rotated by a seeded random orthogonal matrix and coded per coordinate with the Lloyd–Max codebook "
      "of a random unit vector's coordinate, its norm in fp16; keys may add a 1-bit QJL sketch of the residual "
      "(variant=prod, an unbiased inner-product estimator)";
  m.params = {
      {"kbits", ParamType::real, "3",
       "bits per key coordinate b (prod: b − 1 MSE bits + 1 QJL bit); 1..4, prod 2..4; fractional b = ⌊b⌋ + f: "
       "round(f·c) outlier channels at ⌊b⌋ + 1 bits (the paper's 2.5/3.5-bit split; 2.25 = its 32 of 128 at 3)",
       {}, 1, kMaxBits},
      {"vbits", ParamType::real, "3", "bits per value coordinate (TurboQuant_mse); 1..4, fractional as kbits", {}, 1, kMaxBits},
      {"variant", ParamType::choice, "prod",
       "keys: prod (Algorithm 2, unbiased inner products) or mse (Algorithm 1); values are always mse",
       {"prod", "mse"}},
      {"seed", ParamType::integer, "0", "seed of the rotation Π and the QJL matrix S", {}, 0, 9007199254740991.0},
  };
  m.resolve = [](StageSpec& spec, const std::vector<std::string>&) { turboquant_params(spec); };
  m.make_quantizer = [](const StageSpec& spec) -> std::unique_ptr<QuantizerStage> {
    return std::make_unique<Turboquant>(turboquant_params(spec));
  };
  m.layer_local = true;
  return m;
}

}  // namespace kvlab::compressors
