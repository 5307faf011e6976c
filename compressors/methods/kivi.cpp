#include "compressors/methods/kivi.h"

#include <fmt/format.h>

#include <algorithm>

#include "compressors/host_ops.h"
#include "compressors/methods/kivi_kernel.h"
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

KiviGroup kivi_fake_quantize(std::span<float> group, int bits) {
  if (group.empty()) return {};
  const auto n = static_cast<std::int64_t>(group.size());
  const KiviParams p{bits, n, 0};  // one group of the whole span
  const auto packed = kivi_pack(group, QuantLayout::per_token, 1, n, false, p, "kivi group");
  kivi_unpack(packed, QuantLayout::per_token, 1, n, false, p, group);
  const auto g = HostQuantOps::from_fp16(packed, static_cast<std::int64_t>(packed.size()) - 4, 1, 2, 1);  // its 4 last bytes
  return {g(0, 0), g(0, 1)};
}

std::int64_t kivi_quantized_rows(QuantLayout layout, std::int64_t n, bool token_rows, const KiviParams& p) {
  if (layout == QuantLayout::none) return 0;
  if (!token_rows || p.residual == 0) return n;
  // KIVI prefill (docs/methods/kivi.md §2): keys quantize whole R-blocks, values all but the last R tokens.
  if (layout == QuantLayout::per_channel) return n - n % p.residual;
  return std::max<std::int64_t>(0, n - p.residual);
}

KiviPackedLayout kivi_packed_layout(QuantLayout layout, std::int64_t n, std::int64_t c, bool token_rows,
                                    const KiviParams& p) {
  const auto ceil_div = [](std::int64_t a, std::int64_t b) { return (a + b - 1) / b; };
  KiviPackedLayout k;
  k.nq = kivi_quantized_rows(layout, n, token_rows, p);
  k.groups = layout == QuantLayout::per_channel ? c * ceil_div(k.nq, p.group) : k.nq * ceil_div(c, p.group);
  k.group_at = ceil_div(k.nq * c * p.bits, 8);
  k.residual_at = k.group_at + 4 * k.groups;
  k.total = k.residual_at + 2 * (n - k.nq) * c;
  return k;
}

std::int64_t kivi_bytes(QuantLayout layout, std::int64_t n, std::int64_t c, bool token_rows, const KiviParams& p) {
  return layout == QuantLayout::none ? 2 * n * c : kivi_packed_layout(layout, n, c, token_rows, p).total;
}

std::vector<std::uint8_t> kivi_pack(std::span<const float> x, QuantLayout layout, std::int64_t n, std::int64_t c,
                                    bool token_rows, const KiviParams& p, std::string_view what) {
  if (static_cast<std::int64_t>(x.size()) != n * c) fail("{}: {} values for shape [{}, {}]", what, x.size(), n, c);
  return kivi_pack_kernel<HostQuantOps>(Eigen::Map<const HostQuantOps::Floats>(x.data(), n, c), n, c, layout, token_rows, p, what);
}

void kivi_unpack(std::span<const std::uint8_t> packed, QuantLayout layout, std::int64_t n, std::int64_t c,
                 bool token_rows, const KiviParams& p, std::span<float> out) {
  if (static_cast<std::int64_t>(out.size()) != n * c) fail("kivi_unpack: {} values out for [{}, {}]", out.size(), n, c);
  kivi_unpack_kernel<HostQuantOps>(packed, n, c, layout, token_rows, p, Eigen::Map<HostQuantOps::Floats>(out.data(), n, c));
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
