// Rotary position embedding as the Llama family applies it (docs/models.md §2): HF
// "rotate_half" pairing (dimension j pairs with j + D/2), angles p·inv_freq[j] in fp32, with
// the default, linear and llama3 frequency rules. Dumps hold pre-RoPE keys and queries; the
// scorer and the eviction methods rotate them at the true positions, low-rank methods
// reconstruct pre-RoPE keys and leave rotation to attention.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace kvlab::core {

class Rope {
 public:
  // No rotation at all (synthetic dumps, whose queries were built against pre-RoPE keys).
  static Rope identity();
  // The default rule inv_freq[i] = base^(−2i/dim), dim = head_dim (full rotary).
  static Rope standard(int head_dim, double base);
  // From a model's config.json text, with transformers' leniency: rope_theta (default 10000) or
  // rope_parameters.rope_theta; rope_scaling / rope_parameters with "rope_type" or "type"
  // ∈ {default, linear, llama3}; head_dim or hidden_size / num_attention_heads;
  // partial_rotary_factor. A config with "rope_type": "none" at the top level (kvlab synth)
  // gives the identity. Unsupported types (yarn, dynamic, longrope) are an error naming them.
  static Rope from_config(std::string_view config_json, int head_dim);

  bool is_identity() const { return inv_freq_.empty(); }
  int head_dim() const { return head_dim_; }
  // [rotary_dim / 2] inverse frequencies (empty for the identity).
  const std::vector<float>& inv_freq() const { return inv_freq_; }
  std::string describe() const;  // "none" | "default θ=500000" | "llama3 θ=500000 factor=8 ..."

  // Rotates rows in place: x is [n, heads, head_dim] row-major, row t at position positions[t].
  // inverse = true undoes the rotation (rotation by −θ).
  void apply(std::span<float> x, std::int64_t n, int heads, std::span<const std::int64_t> positions,
             bool inverse = false) const;

 private:
  int head_dim_ = 0;
  std::vector<float> inv_freq_;
  std::string description_ = "none";
};

}  // namespace kvlab::core
