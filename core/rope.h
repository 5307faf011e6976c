// Rotary position embedding as the Llama family applies it (docs/models.md §2): HF
// "rotate_half" pairing (dimension j pairs with j + D/2), angles p·inv_freq[j] in fp32, with
// the default, linear and llama3 frequency rules, each evaluated bit for bit as transformers'
// float32 torch code evaluates it on the CPU (docs/models.md §2.1). Dumps hold pre-RoPE keys
// and queries; the scorer and the eviction methods rotate them at the true positions, low-rank
// methods reconstruct pre-RoPE keys and leave rotation to attention.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace kvlab::core {

// torch's CPU pow kernel sends the leading floor(n / B)·B elements of an n-element float tensor
// through its vectorised pow (Sleef's powf_u10, ≤ 1 ulp, not always correctly rounded) and the rest
// through the scalar powf (glibc: correctly rounded). B = 2 × the SIMD width in floats: 32 under
// AVX-512 (current torch's choice on AVX-512 CPUs, kvlab's default), 16 under AVX2, 0 without SIMD
// (ATEN_CPU_CAPABILITY=default). docs/models.md §2.1.
inline constexpr int kTorchPowBlock = 32;

// Sleef's single-precision powf_u10 as its AVX2 / AVX-512 (FMA) builds compute each lane, for
// x > 0 and finite y (the RoPE domain; other inputs are not handled).
float sleef_powf_u10(float x, float y);

// transformers' default table `1.0 / (base ** (arange(0, dim, 2).float() / dim))` as torch
// evaluates it on the CPU in float32: base rounded to f32, exponent 2i/dim an f32 division, pow by
// the block rule above, then a correctly rounded f32 reciprocal.
std::vector<float> torch_default_inv_freq(int head_dim, double base, int pow_block = kTorchPowBlock);

class Rope {
 public:
  // No rotation at all (synthetic dumps, whose queries were built against pre-RoPE keys).
  static Rope identity();
  // The default rule inv_freq[i] = base^(−2i/dim), dim = head_dim (full rotary), as
  // torch_default_inv_freq computes it.
  static Rope standard(int head_dim, double base, int pow_block = kTorchPowBlock);
  // From a model's config.json text, with transformers' leniency: rope_theta (default 10000) or
  // rope_parameters.rope_theta; rope_scaling / rope_parameters with "rope_type" or "type"
  // ∈ {default, linear, llama3}; head_dim or hidden_size / num_attention_heads;
  // partial_rotary_factor (top level or in rope_parameters; rotary_dim = int(head_dim · factor),
  // positive and even, else an error). A config with "rope_type": "none" at the top level (kvlab synth)
  // gives the identity. Unsupported types (yarn, dynamic, longrope) are an error naming them.
  // The linear and llama3 rules follow transformers' float32 tensor arithmetic step by step.
  static Rope from_config(std::string_view config_json, int head_dim, int pow_block = kTorchPowBlock);

  bool is_identity() const { return inv_freq_.empty(); }
  int head_dim() const { return head_dim_; }
  // [rotary_dim / 2] inverse frequencies (empty for the identity).
  const std::vector<float>& inv_freq() const { return inv_freq_; }
  // Channels that rotate: head_dim, or fewer under partial_rotary_factor (Phi-4-mini: 96 of 128),
  // where channels [rotary_dim, head_dim) pass through unrotated.
  int rotary_dim() const { return 2 * static_cast<int>(inv_freq_.size()); }
  std::string describe() const;  // "none" | "default θ=500000" | "llama3 θ=500000 factor=8 ..."

  // Rotates rows in place: x is [n, heads, head_dim] row-major, row t at position positions[t]
  // (only the first rotary_dim channels of each head).
  // inverse = true undoes the rotation (rotation by −θ).
  void apply(std::span<float> x, std::int64_t n, int heads, std::span<const std::int64_t> positions,
             bool inverse = false) const;

 private:
  int head_dim_ = 0;
  std::vector<float> inv_freq_;
  std::string description_ = "none";
};

}  // namespace kvlab::core
