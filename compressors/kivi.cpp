#include "compressors/kivi.h"

#include <Eigen/Core>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace kvlab::compressors {

MethodDef kivi_method() {
  MethodDef m;
  m.name = "kivi";
  m.kind = StageKind::quantizer;
  m.help =
      "KIVI asymmetric min-max quantization of what is stored: keys per channel (groups along tokens), "
      "values and low-rank factors per token (groups along channels), scale and min in fp16 per group, "
      "an fp16 residual window of recent tokens";
  m.params = {
      {"bits", ParamType::choice, "2", "bits per code (KIVI-2 / KIVI-4; 8 for reference)", {"2", "4", "8"}},
      {"group", ParamType::integer, "32", "elements per quantization group G (paper 32)", {}, 1, 1 << 20},
      {"residual", ParamType::integer, "128",
       "full-precision window R in tokens: keys keep the last T mod R, values the last R (paper 128; 0 = none)",
       {}, 0, 1 << 30},
  };
  return m;
}

KiviParams kivi_params(const StageSpec& spec) {
  KiviParams p;
  p.bits = static_cast<int>(spec.get_int("bits"));
  p.group = spec.get_int("group");
  p.residual = spec.get_int("residual");
  // parse_stage checks these already; a hand-built StageSpec could still carry anything.
  if (p.bits != 2 && p.bits != 4 && p.bits != 8) fail("spec 'kivi': key 'bits' = {} is not one of: 2, 4, 8", p.bits);
  if (p.group < 1) fail("spec 'kivi': key 'group' = {} must be at least 1", p.group);
  if (p.residual < 0) fail("spec 'kivi': key 'residual' = {} must be at least 0", p.residual);
  return p;
}

namespace {

float to_fp16(double x) { return static_cast<float>(Eigen::half(static_cast<float>(x))); }

std::uint32_t max_code(int bits) { return (std::uint32_t{1} << bits) - 1; }

}  // namespace

KiviGroup kivi_group_params(float lo, float hi, int bits, std::string_view what) {
  if (!std::isfinite(lo) || !std::isfinite(hi)) fail("{}: non-finite value (min {}, max {})", what, lo, hi);
  KiviGroup g;
  g.min = to_fp16(lo);
  // The range in double: hi − lo of two large floats of opposite sign must not round.
  g.scale = to_fp16((static_cast<double>(hi) - lo) / max_code(bits));
  if (!std::isfinite(g.min) || !std::isfinite(g.scale))
    fail("{}: values [{}, {}] exceed the fp16 range of KIVI's scale/min", what, lo, hi);
  return g;
}

std::uint32_t kivi_code(float x, const KiviGroup& g, int bits) {
  if (g.scale == 0) return 0;  // constant group (or a range below fp16's resolution): everything is min
  // Clamp before rounding as KIVI's pack does; the fp16 min can sit a little above the true min
  // and the fp16 scale a little below the true one, so both ends need the clamp.
  const float v = std::clamp((x - g.min) / g.scale, 0.0f, static_cast<float>(max_code(bits)));
  return static_cast<std::uint32_t>(std::nearbyint(v));  // default rounding mode: half to even
}

KiviGroup kivi_fake_quantize(std::span<float> group, int bits) {
  if (group.empty()) return {};
  const auto [lo, hi] = std::minmax_element(group.begin(), group.end());
  for (float x : group)
    if (!std::isfinite(x)) fail("kivi group: non-finite value {}", x);
  const KiviGroup g = kivi_group_params(*lo, *hi, bits);
  for (float& x : group) x = kivi_dequant(kivi_code(x, g, bits), g);
  return g;
}

std::int64_t kivi_quantized_rows(QuantLayout layout, std::int64_t n, bool token_rows, const KiviParams& p) {
  if (layout == QuantLayout::none) return 0;
  if (!token_rows || p.residual == 0) return n;
  // KIVI prefill (methods.md §5.1): keys quantize whole R-blocks, values all but the last R tokens.
  if (layout == QuantLayout::per_channel) return n - n % p.residual;
  return std::max<std::int64_t>(0, n - p.residual);
}

std::int64_t kivi_bytes(QuantLayout layout, std::int64_t n, std::int64_t c, bool token_rows, const KiviParams& p) {
  if (layout == QuantLayout::none) return 2 * n * c;
  const std::int64_t nq = kivi_quantized_rows(layout, n, token_rows, p);
  const auto ceil_div = [](std::int64_t a, std::int64_t b) { return (a + b - 1) / b; };
  const std::int64_t groups =
      layout == QuantLayout::per_channel ? c * ceil_div(nq, p.group) : nq * ceil_div(c, p.group);
  return ceil_div(nq * c * p.bits, 8) + 4 * groups + 2 * (n - nq) * c;
}

void kivi_quantize_tensor(StoredTensor& t, const KiviParams& p) {
  if (t.layout == QuantLayout::none) return;
  if (t.shape.size() != 2)
    fail("kivi: stored tensor {} has {} dimensions; quantizable tensors are [n, c]", t.name, t.shape.size());
  const std::int64_t n = t.shape[0], c = t.shape[1];
  if (static_cast<std::int64_t>(t.values.size()) != n * c)
    fail("kivi: stored tensor {} holds {} values for shape [{}, {}]", t.name, t.values.size(), n, c);
  const std::int64_t nq = kivi_quantized_rows(t.layout, n, t.token_rows, p);
  const int b = p.bits;
  const std::string what = fmt::format("kivi: stored tensor {}", t.name);
  for (std::int64_t i = 0; i < nq * c; ++i)
    if (!std::isfinite(t.values[i])) fail("{}: non-finite value at row {}, column {}", what, i / c, i % c);

  float* x = t.values.data();
  if (t.layout == QuantLayout::per_channel) {
    // Row blocks of G tokens; within a block every column is its own group. Sweeping whole rows
    // keeps the token-major memory access contiguous.
    std::vector<float> lo(static_cast<std::size_t>(c)), hi(lo.size());
    std::vector<KiviGroup> g(lo.size());
    for (std::int64_t r0 = 0; r0 < nq; r0 += p.group) {
      const std::int64_t r1 = std::min(nq, r0 + p.group);
      std::copy_n(x + r0 * c, c, lo.begin());
      std::copy_n(x + r0 * c, c, hi.begin());
      for (std::int64_t r = r0 + 1; r < r1; ++r)
        for (std::int64_t j = 0; j < c; ++j) {
          lo[j] = std::min(lo[j], x[r * c + j]);
          hi[j] = std::max(hi[j], x[r * c + j]);
        }
      for (std::int64_t j = 0; j < c; ++j) g[j] = kivi_group_params(lo[j], hi[j], b, what);
      for (std::int64_t r = r0; r < r1; ++r)
        for (std::int64_t j = 0; j < c; ++j) x[r * c + j] = kivi_dequant(kivi_code(x[r * c + j], g[j], b), g[j]);
    }
  } else {
    for (std::int64_t r = 0; r < nq; ++r)
      for (std::int64_t j0 = 0; j0 < c; j0 += p.group) {
        float* first = x + r * c + j0;
        float* last = x + r * c + std::min(c, j0 + p.group);
        const auto [lo, hi] = std::minmax_element(first, last);
        const KiviGroup g = kivi_group_params(*lo, *hi, b, what);
        for (float* v = first; v != last; ++v) *v = kivi_dequant(kivi_code(*v, g, b), g);
      }
  }
  t.bytes = kivi_bytes(t.layout, n, c, t.token_rows, p);
  t.format = t.token_rows ? fmt::format("kivi{} g{} r{}", b, p.group, p.residual) : fmt::format("kivi{} g{}", b, p.group);
  t.layout = QuantLayout::none;  // quantized data is not quantized again by a later stage
}

namespace {

class Kivi final : public QuantizerStage {
 public:
  explicit Kivi(KiviParams p) : p_(p) {}
  void quantize(const std::vector<StoredTensor*>& tensors) const override {
    for (StoredTensor* t : tensors)
      if (t) kivi_quantize_tensor(*t, p_);
  }

 private:
  KiviParams p_;
};

}  // namespace

std::unique_ptr<QuantizerStage> make_kivi(const StageSpec& spec) { return std::make_unique<Kivi>(kivi_params(spec)); }

}  // namespace kvlab::compressors
