#include "harness/minicache_on_device.h"

#include <limits>

#include "compressors/chain.h"
#include "core/error.h"
#include "harness/fp16_store.h"

namespace kvlab::harness {
namespace {

// Norms and angle of every row of one head ([T, D] double each); Ω is 0 for degenerate rows.
struct HeadAngles {
  at::Tensor norm1, norm2, omega, degenerate;  // [T]
};

HeadAngles head_angles(const at::Tensor& a, const at::Tensor& b) {
  HeadAngles r;
  r.norm1 = a.square().sum(-1).sqrt();
  r.norm2 = b.square().sum(-1).sqrt();
  r.degenerate = (r.norm1 == 0).logical_or_(r.norm2 == 0);
  const at::Tensor u1 = a / r.norm1.unsqueeze(-1), u2 = b / r.norm2.unsqueeze(-1);
  // atan2 of the half-chords keeps full precision near 0 and π, where arccos(u1·u2) would not.
  const at::Tensor omega = 2 * at::atan2((u1 - u2).square().sum(-1).sqrt(), (u1 + u2).square().sum(-1).sqrt());
  r.omega = at::where(r.degenerate, at::zeros_like(omega), omega);
  return r;
}

// The merged unit directions [T, D] (double) of one head's rows, with compressors/methods/minicache.cpp's
// fallbacks: Ω ≈ 0 or π interpolates the unit directions linearly, antipodal rows at a vanishing
// mix take the end t leans to, a zero row takes the other row's direction (two zero rows: 0).
at::Tensor merge_directions(const at::Tensor& a, const at::Tensor& b, const HeadAngles& g, double t) {
  const at::Tensor n1 = g.norm1.unsqueeze(-1), n2 = g.norm2.unsqueeze(-1);
  const at::Tensor u1 = a / n1, u2 = b / n2;
  const at::Tensor s = g.omega.sin(), small = (s < 1e-7).unsqueeze(-1);
  const at::Tensor w1 = at::where(small, at::full_like(n1, 1 - t), ((1 - t) * g.omega).sin().unsqueeze(-1) / s.unsqueeze(-1));
  const at::Tensor w2 = at::where(small, at::full_like(n1, t), (t * g.omega).sin().unsqueeze(-1) / s.unsqueeze(-1));
  const at::Tensor mix = w1 * u1 + w2 * u2;
  const at::Tensor norm = mix.square().sum(-1, /*keepdim=*/true).sqrt();
  at::Tensor e = at::where(norm < 1e-12, t >= 0.5 ? u2 : u1, mix / norm);
  const at::Tensor zero_only = at::where(n1 > 0, u1, at::where(n2 > 0, u2, at::zeros_like(u1)));
  return at::where(g.degenerate.unsqueeze(-1), zero_only, e);
}

}  // namespace

const compressors::StageSpec* minicache_alone(const compressors::ChainSpec& chain) {
  const auto& s = chain.stages;
  return s.size() == 1 && compressors::device_of(&s[0]) == compressors::DevicePath::minicache ? &s[0] : nullptr;
}

MergedPair minicache_merge_pair(const at::Tensor& x1, const at::Tensor& x2, const compressors::StageSpec& spec) {
  if (!x1.sizes().equals(x2.sizes()) || x1.dim() != 3) fail("minicache: a layer pair of different shapes");
  const double t = spec.get_real("t"), gamma = spec.get_real("gamma");
  const bool above = spec.get("retain") == "above", per_head = spec.get("scope") == "head";
  const std::int64_t H = x1.size(0);
  // Pass 1: every row's angle, for the thresholds (one head at a time bounds the double copies).
  std::vector<HeadAngles> angles;
  for (std::int64_t h = 0; h < H; ++h) angles.push_back(head_angles(x1[h].to(at::kDouble), x2[h].to(at::kDouble)));
  std::vector<at::Tensor> omega, valid;
  for (const auto& g : angles) omega.push_back(g.omega), valid.push_back(g.degenerate.logical_not());
  const at::Tensor all = at::stack(omega), ok = at::stack(valid);  // [H, T]
  const double inf = std::numeric_limits<double>::infinity();
  const at::Tensor lo = at::where(ok, all, at::full_like(all, inf)), hi = at::where(ok, all, at::full_like(all, -inf));
  at::Tensor low = per_head ? lo.amin(1, true) : lo.min(), high = per_head ? hi.amax(1, true) : hi.max();
  // No valid row in a scope group: threshold 0 (nothing retains, every row is a zero row anyway).
  const at::Tensor threshold = at::where(low.isfinite(), low + gamma * (high - low), at::zeros_like(low));
  const at::Tensor keep = ok.logical_and(above ? all > threshold : all <= threshold);  // [H, T]
  // Pass 2: rebuild each head's rows.
  MergedPair out{at::empty(x1.sizes(), x1.options().dtype(at::kFloat)), at::empty(x1.sizes(), x1.options().dtype(at::kFloat))};
  for (std::int64_t h = 0; h < H; ++h) {
    const at::Tensor a = x1[h].to(at::kDouble), b = x2[h].to(at::kDouble);
    const at::Tensor e = round_to_fp16(merge_directions(a, b, angles[h], t));
    const at::Tensor retained = keep[h].unsqueeze(-1);
    out.first[h].copy_(at::where(retained, round_to_fp16(x1[h]), e * round_to_fp16(angles[h].norm1).unsqueeze(-1)));
    out.second[h].copy_(at::where(retained, round_to_fp16(x2[h]), e * round_to_fp16(angles[h].norm2).unsqueeze(-1)));
  }
  out.retained = keep.sum().item<std::int64_t>();
  out.merged = keep.numel() - out.retained;
  return out;
}

}  // namespace kvlab::harness
