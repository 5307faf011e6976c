// Cross-layer analysis of one KV kind (keys or values) of one sample, as in xKV Figure 2:
// token-wise cosine, linear CKA and eigen-rank curves of contiguous layer groups.
//
// Everything follows from two streaming passes over token blocks of all L layers:
//   pass 1: column means μ_l, and the token-wise cosines (they need the raw rows);
//   pass 2: the centred cross-products C_ij = X̃_iᵀX̃_j for all i ≤ j (one GEMM per pair
//           and token block), from which
//     CKA_ij            = ‖C_ij‖²_F / (‖C_ii‖_F·‖C_jj‖_F)                 (feature space, centred)
//     channel cosine_ij = mean_c U_ij[c,c] / √(U_ii[c,c]·U_jj[c,c])     (xKV notebook, uncentred)
//     group spectrum    = eig of the uncentred diagonal block [U_ij]_{i,j∈group}
//   where U_ij = C_ij + n·μ_iμ_jᵀ is the uncentred cross-product. Subtracting the exact mean
//   before the product avoids the catastrophic cancellation of C = U − nμμᵀ in f32
//   (docs/performance.md §4, "Centring").
// Memory: the upper block triangle of the Gram (L(L+1)/2 blocks of (H·D)², 2.1 GiB in f32 for
// 32 layers × 1024 columns) plus one token block of all layers; never the whole dump. The Gram
// is a linalg::PanelGram of the backend: on CUDA its blocks live on the device (copied to the
// host once, at the end) and token blocks go up through two pinned buffers.
#pragma once

#include <Eigen/Core>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "linalg/backend.h"

namespace kvlab::analysis {

// Reads rows [t0, t0 + n) of layer `layer` as an n × (H·D) row-major block into `out`.
using RowReader = std::function<void(int layer, std::int64_t t0, std::int64_t n, std::span<float> out)>;

struct LayerShape {
  int layers = 0;
  int heads = 0;     // KV heads H
  int head_dim = 0;  // D
  std::int64_t tokens = 0;
  std::int64_t width() const { return std::int64_t{heads} * head_dim; }
};

// f32, tf32, bf16 or f64 (linalg/backend.h states what each keeps).
using GramPrecision = linalg::GramPrecision;

struct AnalysisOptions {
  std::vector<int> group_sizes{1, 2, 4, 8};       // G: contiguous, non-overlapping groups (xKV's stride)
  std::vector<double> energies{0.9, 0.95, 0.99};  // energy levels for the eigen-rank curves
  std::int64_t token_block = 2048;                // tokens per streamed block
  GramPrecision precision = GramPrecision::f32;   // of the cross-products and the eigensolves
  bool cka = true;                                // the L×L Gram pass (CKA, channel cosine, eigen-rank)
  std::function<void(const std::string& stage, std::int64_t done, std::int64_t total)> on_progress;
};

// Eigen-rank of one group [X_first … X_{first+size−1}] (uncentred, as xKV).
struct GroupRank {
  int first_layer = 0;
  int size = 0;                       // G
  std::vector<double> spectrum;       // eigenvalues of the group Gram (= σ²), descending, ≥ 0
  std::vector<std::int64_t> rank;     // per energy level: components kept
  std::vector<double> rank_fraction;  // rank / (G·H·D)
};

struct GroupSizeRank {
  int group_size = 0;
  std::vector<GroupRank> groups;           // layers that do not fill a last group are left out
  std::vector<double> mean_rank_fraction;  // per energy level, averaged over the groups
};

struct CrossLayerResult {
  LayerShape shape;
  std::vector<double> energies;
  Eigen::MatrixXd token_cosine;                  // [L, L] mean over tokens of cos(x_t^i, x_t^j)
  std::vector<Eigen::MatrixXd> head_token_cosine;  // H × [L, L], the same per KV head
  Eigen::MatrixXd channel_cosine;                // [L, L] xKV notebook variant: mean over channels of column cosines
  Eigen::MatrixXd cka;                           // [L, L] linear CKA (column-centred, feature space)
  std::vector<GroupSizeRank> eigen_rank;         // one entry per requested group size
  std::int64_t zero_rows = 0;                    // token rows with zero norm, excluded from cosines
  // Wall seconds per stage, and the cross-product stage's useful work (T·(L·H·D)² flops:
  // the upper half of the Gram, 2T flops per entry) for its GFLOP/s against sgemm.
  struct Timings {
    double means_and_cosines = 0, cross_products = 0, similarity = 0, eigen_rank = 0;
  } timings;
  double cross_product_flops = 0;
  double min_kept_sigma_ratio = 1;  // smallest σ_r/σ₁ at the largest energy level; below √u the Gram precision is too low
};

CrossLayerResult analyze_cross_layer(const LayerShape& shape, const RowReader& read_rows,
                                     const AnalysisOptions& options, linalg::Backend& backend);

}  // namespace kvlab::analysis
