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
//
// Group spectra on the smaller side. The group matrix Z_g = [X_l … X_{l+G−1}] is T × G·H·D and
// the spectrum is that of the uncentred Z_gᵀZ_g (raw rows: the mean is added back, nothing is
// normalised). When T < G·H·D it is eigen-solved as the T×T token Gram Z_gZ_gᵀ = Σ_l X_lX_lᵀ
// instead, which has the same non-zero eigenvalues; the G·H·D − T others are exact zeros and
// pad the spectrum to its usual length (the CSV tables keep their shape). The token Gram needs
// every token pair, so pass 2 keeps a copy of the raw rows of the layers that token-side groups
// cover (always layers [0, P): the groups of one size tile a prefix), channel-major in the Gram
// precision: P·T·H·D values. Since T < G·H·D ≤ L·H·D there, that is at most 2L/(L+1) times
// the Gram triangle above (0.9× it at 8 layers × 4096 tokens × 1024 columns); no T×T matrix
// lives across the pass: each is formed (one SYRK) by the eigen-rank worker that solves it,
// so at most one per worker, each smaller than the (G·H·D)² matrix the column side would
// hold there. The dump is still read twice in all. GramSideChoice::column turns the copy off.
#pragma once

#include <Eigen/Core>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
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

// Which Gram a group's spectrum came from: the (G·H·D)² column Gram (a diagonal block of
// pass 2's products) or the T×T token Gram of the kept rows (see above).
enum class GramSide { column, token };
std::string_view to_string(GramSide side);  // "column" | "token"
// automatic: the smaller side, token when T < G·H·D (a tie stays on the column side, which
// needs no copy); column / token force one side for every group (tests, memory).
enum class GramSideChoice { automatic, column, token };

struct AnalysisOptions {
  std::vector<int> group_sizes{1, 2, 4, 8};       // G: contiguous, non-overlapping groups (xKV's stride)
  std::vector<double> energies{0.9, 0.95, 0.99};  // energy levels for the eigen-rank curves
  std::int64_t token_block = 2048;                // tokens per streamed block
  GramPrecision precision = GramPrecision::f32;   // of the cross-products and the eigensolves
  bool cka = true;                                // the L×L Gram pass (CKA, channel cosine, eigen-rank)
  GramSideChoice gram_side = GramSideChoice::automatic;  // of the group spectra
  std::function<void(const std::string& stage, std::int64_t done, std::int64_t total)> on_progress;
};

// Eigen-rank of one group [X_first … X_{first+size−1}] (uncentred, as xKV).
struct GroupRank {
  int first_layer = 0;
  int size = 0;                       // G
  std::vector<double> spectrum;       // eigenvalues of the group Gram (= σ²), descending, ≥ 0
  std::vector<std::int64_t> rank;     // per energy level: components kept
  std::vector<double> rank_fraction;  // rank / (G·H·D)
  GramSide side = GramSide::column;   // the Gram that was eigen-solved
  std::int64_t gram_order = 0;        // its order: G·H·D (column) or T (token); spectrum[k ≥ it] are padding zeros
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
