// Rotary position embedding as the Llama family applies it (docs/models.md §2): HF
// "rotate_half" pairing (dimension j pairs with j + D/2), angles p·inv_freq[j] in fp32, with
// the default, linear, llama3 and LongRoPE frequency rules, each evaluated bit for bit as
// transformers' float32 torch code evaluates it on the CPU (docs/models.md §2.1, §2.6). Dumps hold pre-RoPE keys
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
// The powers `base ** (arange(0, dim, 2).float() / dim)` of that table before the reciprocal
// ([head_dim / 2] f32; LongRoPE divides them by its factors first).
std::vector<float> torch_rope_powers(int head_dim, double base, int pow_block = kTorchPowBlock);

class Rope {
 public:
  // No rotation at all (synthetic dumps, whose queries were built against pre-RoPE keys).
  static Rope identity();
  // The default rule inv_freq[i] = base^(−2i/dim), dim = head_dim (full rotary), as
  // torch_default_inv_freq computes it.
  static Rope standard(int head_dim, double base, int pow_block = kTorchPowBlock);
  // From a model's config.json text, with transformers' leniency: rope_theta (default 10000) or
  // rope_parameters.rope_theta; rope_scaling / rope_parameters with "rope_type" or "type"
  // ∈ {default, linear, llama3, longrope} (phi3: "su" and "yarn" mean longrope, as Phi3Config
  // renames them); head_dim or hidden_size / num_attention_heads;
  // partial_rotary_factor (top level or in rope_parameters; rotary_dim = int(head_dim · factor),
  // positive and even, else an error). A config with "rope_type": "none" at the top level (kvlab synth)
  // gives the identity. Unsupported types (yarn, dynamic, ...) are an error naming them.
  // The linear, llama3 and longrope rules follow transformers' float32 tensor arithmetic step by
  // step. A longrope Rope starts on its short table (HF's table at init); for_length picks.
  static Rope from_config(std::string_view config_json, int head_dim, int pow_block = kTorchPowBlock);

  // LongRoPE (docs/models.md §2.6): transformers rotates a forward whose largest position + 1
  // exceeds original_max_position_embeddings with the long_factor table, else with the short_factor
  // one, and multiplies cos and sin by attention_factor either way.
  bool is_length_dependent() const { return original_max_ > 0; }
  std::int64_t original_max_position() const { return original_max_; }  // 0 unless LongRoPE
  // The Rope a forward over positions [0, seq_len) rotates with: LongRoPE's long table when
  // seq_len > original_max_position(), else its short one; any other rule is returned unchanged.
  Rope for_length(std::int64_t seq_len) const;
  // The factor on cos and sin (f32; 1 except under LongRoPE).
  float attention_factor() const { return attention_factor_; }

  bool is_identity() const { return inv_freq_.empty(); }
  int head_dim() const { return head_dim_; }
  // [rotary_dim / 2] inverse frequencies (empty for the identity).
  const std::vector<float>& inv_freq() const { return inv_freq_; }
  // Channels that rotate: head_dim, or fewer under partial_rotary_factor (Phi-4-mini: 96 of 128),
  // where channels [rotary_dim, head_dim) pass through unrotated.
  int rotary_dim() const { return 2 * static_cast<int>(inv_freq_.size()); }
  std::string describe() const;  // "none" | "default θ=500000" | "llama3 θ=500000 factor=8 ..."

  // Rotates rows in place: x is [n, heads, head_dim] row-major, row t at position positions[t]
  // (only the first rotary_dim channels of each head), cos and sin times attention_factor() (each
  // product rounded to f32, as HF's `emb.cos() * attention_scaling`).
  // inverse = true undoes it (rotation by −θ, divided by attention_factor()).
  void apply(std::span<float> x, std::int64_t n, int heads, std::span<const std::int64_t> positions,
             bool inverse = false) const;

 private:
  friend struct RopeConfigReader;  // rope.cpp: builds the LongRoPE fields from a parsed config
  int head_dim_ = 0;
  std::vector<float> inv_freq_;
  std::string description_ = "none";
  float attention_factor_ = 1.0f;
  std::int64_t original_max_ = 0;             // LongRoPE: the switch length, else 0
  std::vector<float> short_inv_, long_inv_;   // LongRoPE's two tables (inv_freq_ is one of them)
  std::string base_description_;              // LongRoPE: the description without "short"/"long"
};

}  // namespace kvlab::core
