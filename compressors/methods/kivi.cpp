#include "compressors/methods/kivi.h"

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
  m.make_quantizer = make_kivi;
  m.layer_local = true;
  m.device = DevicePath::kivi;
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
  // KIVI prefill (docs/methods/kivi.md §2): keys quantize whole R-blocks, values all but the last R tokens.
  if (layout == QuantLayout::per_channel) return n - n % p.residual;
  return std::max<std::int64_t>(0, n - p.residual);
}

namespace {

std::uint16_t half_bits(float x) { return Eigen::numext::bit_cast<std::uint16_t>(Eigen::half(x)); }
float half_value(std::uint16_t bits) { return static_cast<float>(Eigen::numext::bit_cast<Eigen::half>(bits)); }
void put_u16(std::uint8_t* at, std::uint16_t v) {
  at[0] = static_cast<std::uint8_t>(v & 0xff);
  at[1] = static_cast<std::uint8_t>(v >> 8);
}
std::uint16_t get_u16(const std::uint8_t* at) { return static_cast<std::uint16_t>(at[0] | (at[1] << 8)); }

std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

}  // namespace

KiviPackedLayout kivi_packed_layout(QuantLayout layout, std::int64_t n, std::int64_t c, bool token_rows,
                                    const KiviParams& p) {
  KiviPackedLayout k;
  k.nq = kivi_quantized_rows(layout, n, token_rows, p);
  k.groups = layout == QuantLayout::per_channel ? c * ceil_div(k.nq, p.group) : k.nq * ceil_div(c, p.group);
  k.group_at = ceil_div(k.nq * c * p.bits, 8);
  k.residual_at = k.group_at + 4 * k.groups;
  k.total = k.residual_at + 2 * (n - k.nq) * c;
  return k;
}

namespace {

// Visits every quantization group of the quantized rows: `group(index, first, count, stride)`
// with the group's index in the packed order; its elements are the flat indices (i·c + j)
// first + k·stride, k < count.
template <typename Visit>
void for_each_group(QuantLayout layout, std::int64_t nq, std::int64_t c, std::int64_t size, Visit&& group) {
  if (layout == QuantLayout::per_channel) {
    for (std::int64_t r0 = 0, block = 0; r0 < nq; r0 += size, ++block)
      for (std::int64_t j = 0; j < c; ++j) group(block * c + j, r0 * c + j, std::min(nq, r0 + size) - r0, c);
  } else {
    const std::int64_t per_row = ceil_div(c, size);
    for (std::int64_t r = 0; r < nq; ++r)
      for (std::int64_t j0 = 0; j0 < c; j0 += size) group(r * per_row + j0 / size, r * c + j0, std::min(c, j0 + size) - j0, 1);
  }
}

}  // namespace

std::int64_t kivi_bytes(QuantLayout layout, std::int64_t n, std::int64_t c, bool token_rows, const KiviParams& p) {
  return layout == QuantLayout::none ? 2 * n * c : kivi_packed_layout(layout, n, c, token_rows, p).total;
}

std::vector<std::uint8_t> kivi_pack(std::span<const float> x, QuantLayout layout, std::int64_t n, std::int64_t c,
                                    bool token_rows, const KiviParams& p, std::string_view what) {
  if (layout == QuantLayout::none) fail("{}: layout none is not quantized", what);
  if (static_cast<std::int64_t>(x.size()) != n * c) fail("{}: {} values for shape [{}, {}]", what, x.size(), n, c);
  const auto k = kivi_packed_layout(layout, n, c, token_rows, p);
  for (std::int64_t i = 0; i < k.nq * c; ++i)
    if (!std::isfinite(x[i])) fail("{}: non-finite value at row {}, column {}", what, i / c, i % c);
  std::vector<std::uint8_t> out(static_cast<std::size_t>(k.total), 0);
  const int b = p.bits;
  for_each_group(layout, k.nq, c, p.group, [&](std::int64_t index, std::int64_t first, std::int64_t count, std::int64_t stride) {
    const std::int64_t last = first + count * stride;
    float lo = x[first], hi = lo;
    for (std::int64_t e = first; e < last; e += stride) {
      lo = std::min(lo, x[e]);
      hi = std::max(hi, x[e]);
    }
    const KiviGroup g = kivi_group_params(lo, hi, b, what);
    put_u16(out.data() + k.group_at + 4 * index, half_bits(g.scale));
    put_u16(out.data() + k.group_at + 4 * index + 2, half_bits(g.min));
    for (std::int64_t e = first; e < last; e += stride)
      out[static_cast<std::size_t>(e * b / 8)] |= static_cast<std::uint8_t>(kivi_code(x[e], g, b) << (e * b % 8));
  });
  for (std::int64_t i = k.nq * c; i < n * c; ++i) put_u16(out.data() + k.residual_at + 2 * (i - k.nq * c), half_bits(x[i]));
  return out;
}

void kivi_unpack(std::span<const std::uint8_t> packed, QuantLayout layout, std::int64_t n, std::int64_t c,
                 bool token_rows, const KiviParams& p, std::span<float> out) {
  if (layout == QuantLayout::none) fail("kivi_unpack: layout none is not quantized");
  const auto k = kivi_packed_layout(layout, n, c, token_rows, p);
  if (static_cast<std::int64_t>(packed.size()) != k.total)
    fail("kivi_unpack: {} bytes for a [{}, {}] tensor whose packed form takes {}", packed.size(), n, c, k.total);
  if (static_cast<std::int64_t>(out.size()) != n * c) fail("kivi_unpack: {} values out for [{}, {}]", out.size(), n, c);
  const int b = p.bits;
  const std::uint32_t mask = max_code(b);
  for_each_group(layout, k.nq, c, p.group, [&](std::int64_t index, std::int64_t first, std::int64_t count, std::int64_t stride) {
    const KiviGroup g{half_value(get_u16(packed.data() + k.group_at + 4 * index)),
                      half_value(get_u16(packed.data() + k.group_at + 4 * index + 2))};
    for (std::int64_t e = first; e < first + count * stride; e += stride)
      out[static_cast<std::size_t>(e)] = kivi_dequant((packed[static_cast<std::size_t>(e * b / 8)] >> (e * b % 8)) & mask, g);
  });
  for (std::int64_t i = k.nq * c; i < n * c; ++i)
    out[static_cast<std::size_t>(i)] = half_value(get_u16(packed.data() + k.residual_at + 2 * (i - k.nq * c)));
}

void kivi_quantize_tensor(StoredTensor& t, const KiviParams& p) {
  if (t.layout == QuantLayout::none) return;
  if (t.shape.size() != 2)
    fail("kivi: stored tensor {} has {} dimensions; quantizable tensors are [n, c]", t.name, t.shape.size());
  const std::int64_t n = t.shape[0], c = t.shape[1];
  if (static_cast<std::int64_t>(t.values.size()) != n * c)
    fail("kivi: stored tensor {} holds {} values for shape [{}, {}]", t.name, t.values.size(), n, c);
  t.packed = kivi_pack(t.values, t.layout, n, c, t.token_rows, p, fmt::format("kivi: stored tensor {}", t.name));
  kivi_unpack(t.packed, t.layout, n, c, t.token_rows, p, t.values);  // the values are what the bytes give back
  t.format = t.token_rows ? fmt::format("kivi{} g{} r{}", p.bits, p.group, p.residual) : fmt::format("kivi{} g{}", p.bits, p.group);
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
