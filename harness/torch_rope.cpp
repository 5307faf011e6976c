#include "harness/torch_rope.h"

#include "core/error.h"

namespace kvlab::harness {

at::Tensor rope_rotate(const at::Tensor& x, const at::Tensor& positions, const core::Rope& rope, bool inverse) {
  if (rope.is_identity()) return x;
  const std::int64_t half = static_cast<std::int64_t>(rope.inv_freq().size());
  if (rope.head_dim() != x.size(-1) || 2 * half > x.size(-1))
    fail("RoPE: {} frequencies for head_dim {}", half, x.size(-1));
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(x.device());
  const at::Tensor inv_freq = at::tensor(at::ArrayRef<float>(rope.inv_freq()), f32);
  const at::Tensor angles = at::outer(positions.to(f32), inv_freq).unsqueeze(1);  // [n, 1, D/2]
  at::Tensor cos = angles.cos(), sin = inverse ? -angles.sin() : angles.sin();
  if (const double a = rope.attention_factor(); a != 1.0) {  // LongRoPE: cos, sin × a (inverse: ÷ a)
    cos = inverse ? cos / a : cos * a;
    sin = inverse ? sin / a : sin * a;
  }
  // Partial rotary (Phi-4-mini): the first 2·half channels rotate (j pairs with j + half), the
  // rest pass through, as core::Rope::apply and transformers' apply_rotary_pos_emb do.
  const at::Tensor a = x.narrow(-1, 0, half), b = x.narrow(-1, half, half);
  const at::Tensor rotated = at::cat({a * cos - b * sin, b * cos + a * sin}, -1);
  if (2 * half == x.size(-1)) return rotated;
  return at::cat({rotated, x.narrow(-1, 2 * half, x.size(-1) - 2 * half).to(rotated.scalar_type())}, -1);
}

}  // namespace kvlab::harness
