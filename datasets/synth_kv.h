// Synthetic KV dumps whose structure is known: the ground truth for tests and the demo.
//
// Notation: N = kv_heads·head_dim columns, T tokens, r = planted rank, ρ = drift, S = sink_tokens.
// Per sample s and layer l (row-major X ∈ R^{T×N}, i.e. [T, H_kv, D]):
//
//   K_l = (A_l·c·Σ·B_l + 1·m_lᵀ)·D_l + e_S·(sink_scale·ν_l)·u_lᵀ + noise·E
//   V_l =  A'_l·c'·Σ'·B'_l + noise·E'                 (own rank, decay and drift; no outliers, no sinks)
//
//   A_l  [T, r] token factors, i.i.d. N(0,1) within a layer, an AR(1) chain across layers:
//        A_0 = F_0, A_l = √(1−ρ²)·A_{l−1} + ρ·F_l with fresh N(0,1) F_l. Adjacent layers share most
//        of their token subspace (high CKA) and drift apart with distance.
//   Σ    diag(decay^k), k < r; c = √(N / Σ_k decay^{2k}) so that the signal's element RMS is 1.
//   B_l  [r, N] random orthonormal rows, independent across layers: the same token's vectors in two
//        layers are nearly orthogonal (token-wise cosine ≈ 0) although CKA is high (xKV's observation).
//   m_l  ±1 on `outlier_channels` random channels c_{l,j} of layer l (0 elsewhere); D_l =
//        diag(outlier_scale on those channels, 1 elsewhere): outlier channels have a large offset and a
//        large spread, as pre-RoPE keys do. Column c_{l,j} of c·Σ·B_l is replaced by w_j = c·Σ·g_j/√N
//        (g_j ~ N(0, I_r), the same in every layer): the outlier channels sit at other positions in
//        each layer (token-wise cosine stays ≈ 0) but carry the same drifting token features, so
//        CKA, which ignores channel order, stays ≈ (1−ρ²)^d although they hold much of the energy.
//   e_S  indicator of the tokens t < S (attention sinks); u_l a random unit direction of layer l
//        shared by all sink tokens; ν_l the expected norm of an ordinary key row (the first term),
//        √(Σ_c D_c²·(‖M_{:,c}‖² + m_c²)) with M = c·Σ·B_l after the w_j replacement, so sink rows are
//        about sink_scale times longer than the others.
//   E    isotropic N(0,1) noise; `noise` is its std relative to the signal's element RMS (= 1).
// B_l, m_l, D_l and u_l play the model's weights: the same in every sample. A_l, E and the query
// targets are per sample.
//
// Queries, [W, H_q, D] for tokens T−W+w; query head h reads KV head g = h / (H_q/H_kv):
//   q = P·C·(CᵀP·C)⁻¹·√D·ℓ + noise·(‖q‖/√D)·e,   C = [k̃_π, s̃], ℓ = [query_logit, sink_logit]
//   k̃ = the head-g key row minus its constant offset (m_l·D_l), π = query_target(sample, layer, w, h)
//   a uniform random context token in [S, T−W), s̃ = the mean k̃ of the sink rows (no column when
//   S = 0), P ≈ the inverse of the head's key covariance (lightly ridged; see make_query).
// So, before the query noise, q·k_π/√D = query_logit and mean_{t<S} q·k_t/√D = sink_logit exactly,
// above the part of the logit that is the same for every token (softmax ignores it); q is the matched
// filter for those targets, so other tokens' logits are about N(0, ℓ²/D_eff) with D_eff the head's key
// rank: attention peaks at π and at the sinks instead of being uniform (for D_eff ≳ 2·ln T).

// Ground truth with noise = 0 (holds with probability 1 over the seed; e = [outlier_channels > 0] +
// [S > 0] for keys, e = 0 for values):
//   rank(X_l)                 = min(T, N, r + e)
//   rank([X_l … X_{l+G−1}])   = min(T, G·min(N, r + e), (ρ > 0 ? G·r : r) + e)
//                               (the layers share the offset column 1 and the sink indicator e_S, so
//                               those count once, not G times; with ρ = 0 all layers share col(A)).
//   singular values of X_l    ≈ √T·c·decay^k, k < r, for outliers and sinks off; the relative error
//                               is O(1/√T) (A_lᵀA_l/T ≈ I); planted_singular_values() returns them.
//   linear CKA(X_l, X_{l+d})  ≈ (1−ρ²)^d, plus a finite-sample bias O(r_eff/T), r_eff =
//                               (Σσ_k²)²/Σσ_k⁴; mean token-wise cosine ≈ 0 (±1/√(r_eff·N), and a
//                               few hundredths more where two layers' outlier channels happen to
//                               coincide, chance ≈ outlier_channels²/N a pair). Sinks raise CKA somewhat
//                               (they are the same tokens in every layer): with the default keys at
//                               T = 4096, 0.84 instead of 0.80 adjacent and 0.62 instead of 0.51 at d = 3.
//   Group eigen-rank: a group of G layers has G·r planted directions, but its energy concentrates
//   in about r of them when ρ is small (the G factors of one column form a Kac–Murdock–Szegő
//   correlation matrix with one dominant eigenvalue), so the energy rank as a fraction of the G·N
//   columns falls as G grows, as in xKV Figure 2. Measured with the defaults at T = 4096, 90%-energy
//   rank / (G·N) for G = 1, 2, 4: keys 7.8%, 4.7%, 3.1%; values 21%, 15%, 12%.
//
// Determinism: every random draw comes from a std::mt19937_64 seeded from (seed, stream, sample,
// layer, kind, token block) and turned into normals by our own polar method (std::normal_distribution
// differs between standard libraries). Token blocks of kTokenBlock rows are generated independently
// and in parallel, so the output does not depend on the thread count: same config and seed →
// bit-identical tensors on the same platform and build.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/kv_dump.h"
#include "core/tensor.h"

namespace kvlab::datasets {

struct SynthConfig {
  int layers = 32;
  int kv_heads = 8;
  int q_heads = 32;  // a multiple of kv_heads (GQA group = q_heads / kv_heads)
  int head_dim = 128;
  std::int64_t tokens = 16384;  // T
  int query_window = 64;        // W ≥ 1: queries for tokens [T−W, T); context_end = T − W
  int samples = 1;
  int key_rank = 0;            // planted rank r_K in [1, N]; 0: N/4
  int value_rank = 0;          // planted rank r_V in [1, N]; 0: N/2
  double key_decay = 0.99;     // σ_k = key_decay^k, in (0, 1]
  double value_decay = 0.995;  // values are less low-rank than keys
  double layer_drift = 0.45;   // ρ_K ∈ [0, 1] of the keys: 0 same token factors in every layer, 1 independent
  double value_drift = 0.55;   // ρ_V ∈ [0, 1] of the values
  double noise = 0.05;         // noise floor std relative to the signal's element RMS; 0: exact planted rank
  int outlier_channels = 8;    // key channels per layer with a large offset and spread; 0: none
  double outlier_scale = 8;    // D_l on those channels, > 0
  int sink_tokens = 4;         // first S tokens get a large shared key direction; 0: none
  double sink_scale = 8;       // sink term's norm relative to an ordinary key row's expected norm
  double query_logit = 12;     // each query's logit for its target token (above the common part)
  double sink_logit = 10;      // each query's logit for the sinks (above the common part)
  core::DType dtype = core::DType::f16;  // storage type of the dump
  std::uint64_t seed = 0;

  int width() const { return kv_heads * head_dim; }  // N
  // Every field as a JSON object (text): stored as the dump's model_config for provenance.
  std::string to_json() const;
};

// Rows generated from one random stream; part of the output's definition (changing it changes the data).
inline constexpr std::int64_t kTokenBlock = 1024;

class SynthGenerator {
 public:
  // Validates the config (kvlab::Error naming the bad field) and resolves key_rank/value_rank = 0.
  explicit SynthGenerator(SynthConfig config);

  const SynthConfig& config() const { return config_; }  // with the ranks resolved
  core::DumpInfo dump_info() const;                      // model_id "synthetic", model_config = config JSON
  core::SampleMeta sample_meta(int sample) const;        // id "s<sample>", context_end = T − W, no token ids

  // One layer's tensor, row-major: key/value [T, H_kv, D], query [W, H_q, D]. A pure function of
  // (config, sample, layer, kind). Restarts the token-factor chain at layer 0, so it costs
  // layer + 1 factor draws; for all layers in order use for_each_layer.
  core::FloatTensor layer(int sample, int layer, core::KvKind kind) const;

  using LayerSink = std::function<void(int layer, const core::FloatTensor& key, const core::FloatTensor& value,
                                       const core::FloatTensor& query)>;
  // Generates layers 0..L−1 of `sample` in order, each as layer() would, and hands them to `sink`.
  // Holds one layer of K, V and Q plus the token factors at a time.
  void for_each_layer(int sample, const LayerSink& sink) const;

  // Ground truth for noise = 0 (see the file comment). `kind` is key or value.
  std::int64_t planted_rank(core::KvKind kind, int group_size = 1) const;
  std::vector<double> planted_singular_values(core::KvKind kind) const;  // [r] ≈ √T·c·decay^k
  double expected_cka(core::KvKind kind, int distance) const;            // (1 − ρ²)^distance
  // The context token that query row `window_row` (token T−W+window_row), head `q_head`, targets.
  std::int64_t query_target(int sample, int layer, int window_row, int q_head) const;

 private:
  struct Chain;       // token factors A_l of one (sample, kind), advanced layer by layer
  struct LayerModel;  // the sample-independent part of one (layer, kind): c·Σ·B_l, outliers, sink
  LayerModel layer_model(int layer, core::KvKind kind) const;
  double ordinary_row_norm(const LayerModel& model) const;
  void advance(int sample, core::KvKind kind, Chain& chain, core::FloatTensor* out) const;
  core::FloatTensor make_query(int sample, int layer, const core::FloatTensor& keys, const LayerModel& model) const;
  std::vector<std::int64_t> query_targets(int sample, int layer) const;  // [W·H_q]

  SynthConfig config_;
};

// Writes the whole dump atomically (core::DumpWriter), layer by layer, with a progress bar.
void write_synthetic_dump(const SynthConfig& config, const std::filesystem::path& out);

}  // namespace kvlab::datasets
