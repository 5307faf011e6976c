#include "analysis/cross_layer.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <mutex>
#include <thread>
#include <type_traits>

#include "analysis/energy_rank.h"
#include "core/error.h"
#include "core/parallel.h"
#include "core/stopwatch.h"
#include "linalg/fan_out.h"

namespace kvlab::analysis {
namespace {

using Eigen::MatrixXd;

// A token block of all L layers, layer-major: layer l's rows start at l·capacity·width, so a
// layer is a contiguous row-major [rows × width] matrix and a layer's whole block is one vector.
template <typename T>
struct LayerBlock {
  std::int64_t capacity;  // tokens per block
  std::int64_t width;     // H·D
  int layers;
  std::vector<T> data;
  LayerBlock(int l, std::int64_t cap, std::int64_t w)
      : capacity(cap), width(w), layers(l), data(static_cast<std::size_t>(l * cap * w)) {}
  T* layer(int l) { return data.data() + std::int64_t{l} * capacity * width; }
  std::int64_t layer_stride() const { return capacity * width; }
};

// body(l) for every layer of a token block, on up to one thread per core: the per-layer work
// (reading it, whose HDF5 calls a dump serialises but whose 16-bit conversion it does not, and
// the loops over its rows) runs side by side. Bodies must touch only layer l's data.
template <typename F>
void for_each_layer(int layers, F&& body) {
  core::parallel_for(layers, [&](std::int64_t l) { body(static_cast<int>(l)); });
}

template <typename F>
void for_each_block(const LayerShape& shape, std::int64_t block_tokens, F&& body) {
  for (std::int64_t t0 = 0; t0 < shape.tokens; t0 += block_tokens) body(t0, std::min(block_tokens, shape.tokens - t0));
}

// Mean over tokens of the cosine of the same token's vectors in two layers, whole layer and
// per head. With rows normalised in place, Σ_t cos_t(i, j) = ⟨vec N_i, vec N_j⟩, so one
// GEMM of the L layer vectors per block gives every pair. Zero rows are excluded pairwise.
class CosineAccumulator {
 public:
  CosineAccumulator(const LayerShape& shape, std::int64_t capacity)
      : shape_(shape),
        heads_(shape.layers, capacity, shape.width()),  // per-head normalised copy, [h][l][t][d]
        whole_sum_(MatrixXd::Zero(shape.layers, shape.layers)),
        whole_count_(MatrixXd::Zero(shape.layers, shape.layers)),
        head_sum_(static_cast<std::size_t>(shape.heads), MatrixXd::Zero(shape.layers, shape.layers)),
        head_count_(static_cast<std::size_t>(shape.heads), MatrixXd::Zero(shape.layers, shape.layers)),
        whole_nonzero_(capacity, shape.layers),
        head_nonzero_(static_cast<std::size_t>(shape.heads), Eigen::MatrixXf(capacity, shape.layers)),
        zero_per_layer_(static_cast<std::size_t>(shape.layers), 0) {}

  // Normalises layer l's rows of the block in place (and copies each head's segments, each
  // normalised on its own): touches only layer l's data, so the layers of a block may be
  // normalised side by side (for_each_layer). Then add() the block.
  void normalize(LayerBlock<float>& block, int l, std::int64_t rows) {
    const int L = shape_.layers, H = shape_.heads, D = shape_.head_dim;
    const std::int64_t W = shape_.width(), cap = block.capacity;
    float* x = block.layer(l);
    std::int64_t zero = 0;
    for (std::int64_t t = 0; t < rows; ++t) {
      float* row = x + t * W;
      double whole = 0;
      for (int h = 0; h < H; ++h) {
        const float* seg = row + std::int64_t{h} * D;
        double s = 0;
        for (int d = 0; d < D; ++d) s += double(seg[d]) * seg[d];
        whole += s;
        const float inv = s > 0 ? float(1 / std::sqrt(s)) : 0.f;
        float* dst = heads_.data.data() + ((std::int64_t{h} * L + l) * cap + t) * D;
        for (int d = 0; d < D; ++d) dst[d] = seg[d] * inv;
        head_nonzero_[static_cast<std::size_t>(h)](t, l) = s > 0 ? 1.f : 0.f;
      }
      const float inv = whole > 0 ? float(1 / std::sqrt(whole)) : 0.f;
      for (std::int64_t c = 0; c < W; ++c) row[c] *= inv;
      whole_nonzero_(t, l) = whole > 0 ? 1.f : 0.f;
      if (whole == 0) ++zero;
    }
    zero_per_layer_[static_cast<std::size_t>(l)] = zero;
  }

  // Adds the first `rows` tokens of a block whose every layer normalize() has seen.
  void add(const LayerBlock<float>& block, std::int64_t rows) {
    const int L = shape_.layers, H = shape_.heads, D = shape_.head_dim;
    const std::int64_t W = shape_.width(), cap = block.capacity;
    for (auto z : zero_per_layer_) zero_rows_ += z;
    accumulate(block.data.data(), rows * W, block.layer_stride(), whole_nonzero_.topRows(rows), whole_sum_,
               whole_count_);
    for (int h = 0; h < H; ++h)
      accumulate(heads_.data.data() + std::int64_t{h} * L * cap * D, rows * D, cap * D,
                 head_nonzero_[static_cast<std::size_t>(h)].topRows(rows), head_sum_[static_cast<std::size_t>(h)],
                 head_count_[static_cast<std::size_t>(h)]);
  }

  void finish(CrossLayerResult& result) const {
    result.token_cosine = mean(whole_sum_, whole_count_);
    for (int h = 0; h < shape_.heads; ++h)
      result.head_token_cosine.push_back(mean(head_sum_[static_cast<std::size_t>(h)], head_count_[static_cast<std::size_t>(h)]));
    result.zero_rows = zero_rows_;
  }

 private:
  // sums += VᵀV for the L layer vectors (each `length` long, `stride` apart); counts of
  // tokens where both layers are non-zero += NᵀN. An L×L product over millions of terms reads
  // the block once and computes little: it is split along the vectors into slices summed on one
  // thread per core (Eigen, f32 within a slice, f64 across), on the host where the block lies;
  // a BLAS GEMM of this shape runs on one thread, and the CUDA backend's would upload the block
  // twice per call.
  void accumulate(const float* vectors, std::int64_t length, std::int64_t stride,
                  const Eigen::Ref<const Eigen::MatrixXf>& nonzero, MatrixXd& sums, MatrixXd& counts) const {
    const int L = shape_.layers;
    constexpr std::int64_t kMinSlice = std::int64_t{1} << 16;
    const std::int64_t slices = std::clamp<std::int64_t>(length / kMinSlice, 1, std::max(1u, std::thread::hardware_concurrency()));
    std::vector<MatrixXd> partial(static_cast<std::size_t>(slices), MatrixXd::Zero(L, L));
    core::parallel_for(slices, [&](std::int64_t i) {
      const std::int64_t begin = length * i / slices, end = length * (i + 1) / slices;
      const Eigen::Map<const Eigen::MatrixXf, 0, Eigen::OuterStride<>> v(vectors + begin, end - begin, L,
                                                                         Eigen::OuterStride<>(stride));
      partial[static_cast<std::size_t>(i)] = (v.transpose() * v).cast<double>();
    });
    for (const auto& p : partial) sums += p;
    counts += (nonzero.transpose() * nonzero).cast<double>();
  }

  static MatrixXd mean(const MatrixXd& sums, const MatrixXd& counts) {
    MatrixXd m = sums.cwiseQuotient(counts.cwiseMax(1.0));
    for (Eigen::Index i = 0; i < m.rows(); ++i)
      for (Eigen::Index j = 0; j < m.cols(); ++j)
        if (counts(i, j) == 0) m(i, j) = std::nan("");
    return m;
  }

  LayerShape shape_;
  LayerBlock<float> heads_;
  MatrixXd whole_sum_, whole_count_;
  std::vector<MatrixXd> head_sum_, head_count_;
  Eigen::MatrixXf whole_nonzero_;               // [capacity, L]: 1 where a token's row is non-zero
  std::vector<Eigen::MatrixXf> head_nonzero_;   // per head, the same
  std::vector<std::int64_t> zero_per_layer_;    // this block's all-zero rows, per layer
  std::int64_t zero_rows_ = 0;
};

using core::seconds_since;

template <typename T>
double frobenius2(const T* m, std::int64_t n) {
  double s = 0;
  for (std::int64_t k = 0; k < n * n; ++k) s += double(m[k]) * double(m[k]);
  return s;
}

struct GroupJob {
  std::size_t size_index, group_index;
  int first_layer, size;
  GramSide side;
  std::int64_t order;  // of the matrix eigen-solved: G·H·D (column) or T (token)
};

GramSide choose_side(const LayerShape& shape, const AnalysisOptions& options, int group_size) {
  switch (options.gram_side) {
    case GramSideChoice::column: return GramSide::column;
    case GramSideChoice::token: return GramSide::token;
    case GramSideChoice::automatic: break;
  }
  return shape.tokens < std::int64_t{group_size} * shape.width() ? GramSide::token : GramSide::column;
}

// Layers [0, P) that token-side groups cover: the groups of one size tile a prefix of the layers.
int token_side_layers(const LayerShape& shape, const AnalysisOptions& options) {
  int prefix = 0;
  for (int g : options.group_sizes)
    if (g >= 1 && choose_side(shape, options, g) == GramSide::token) prefix = std::max(prefix, shape.layers / g * g);
  return prefix;
}

// dst[c·ld + t] = T(src[t·width + c]) for t < rows, c < width: a layer's token-major rows into
// its channel-major copy, in square tiles so that reads and writes both stay within a few
// cache lines.
template <typename T>
void transpose_rows(const float* src, std::int64_t rows, std::int64_t width, T* dst, std::int64_t ld) {
  constexpr std::int64_t kTile = 32;
  for (std::int64_t t0 = 0; t0 < rows; t0 += kTile)
    for (std::int64_t c0 = 0; c0 < width; c0 += kTile) {
      const std::int64_t t1 = std::min(rows, t0 + kTile), c1 = std::min(width, c0 + kTile);
      for (std::int64_t c = c0; c < c1; ++c)
        for (std::int64_t t = t0; t < t1; ++t) dst[c * ld + t] = T(src[t * width + c]);
    }
}

template <typename T>
class GramAnalysis {
 public:
  GramAnalysis(const LayerShape& shape, const AnalysisOptions& options, linalg::Backend& backend)
      : shape_(shape),
        options_(options),
        backend_(backend),
        gram_(linalg::make_panel_gram<T>(backend, shape.layers, shape.width(),
                                         std::min(options.token_block, shape.tokens), options.precision)),
        kept_layers_(token_side_layers(shape, options)),
        kept_(static_cast<std::size_t>(std::int64_t{kept_layers_} * shape.width() * shape.tokens)) {}

  void run(const RowReader& read_rows, const std::vector<double>& mean_f64, CrossLayerResult& result) {
    const int L = shape_.layers;
    const std::int64_t W = shape_.width(), stride = gram_->panel_stride();
    std::vector<T> mean(mean_f64.begin(), mean_f64.end());
    // f32 rows are read straight into the staging block (pinned memory on CUDA) and centred in
    // place; f64 ones are read into an f32 block and widened while centred.
    constexpr bool in_place = std::is_same_v<T, float>;
    LayerBlock<float> raw(in_place ? 0 : L, gram_->capacity(), W);
    std::int64_t done = 0;
    auto start = std::chrono::steady_clock::now();
    for_each_block(shape_, gram_->capacity(), [&](std::int64_t t0, std::int64_t rows) {
      T* staging = gram_->staging();  // a different buffer each block on CUDA (double buffering)
      for_each_layer(L, [&](int l) {
        T* dst = staging + l * stride;
        const float* src;
        if constexpr (in_place) {
          read_rows(l, t0, rows, std::span<float>(dst, static_cast<std::size_t>(rows * W)));
          src = dst;
        } else {
          read_rows(l, t0, rows, std::span<float>(raw.layer(l), static_cast<std::size_t>(rows * W)));
          src = raw.layer(l);
        }
        // The token side's copy of the raw rows, before they are centred in place.
        if (l < kept_layers_) transpose_rows(src, rows, W, kept_layer(l) + t0, shape_.tokens);
        const T* mu = mean.data() + std::int64_t{l} * W;
        for (std::int64_t t = 0; t < rows; ++t)
          for (std::int64_t c = 0; c < W; ++c) dst[t * W + c] = T(src[t * W + c]) - mu[c];
      });
      gram_->add(rows);
      done += rows;
      if (options_.on_progress) options_.on_progress("cross-products", done, shape_.tokens);
    });
    gram_->finish();
    // The token Gram's inputs as the precision has the column Gram's (tf32, bf16: rounded to
    // nearest even; the products then run in f32 as PanelGram's host emulation does).
    if constexpr (in_place) linalg::round_gram_inputs(options_.precision, std::span<float>(kept_));
    result.timings.cross_products = seconds_since(start);
    const double columns = double(L) * double(W);
    result.cross_product_flops = double(shape_.tokens) * columns * columns;
    start = std::chrono::steady_clock::now();
    similarity(mean_f64, result);
    result.timings.similarity = seconds_since(start);
    start = std::chrono::steady_clock::now();
    eigen_rank(mean_f64, result);
    result.timings.eigen_rank = seconds_since(start);
  }

 private:
  // Uncentred product U_ij[a,b] = C_ij[a,b] + n·μ_i[a]·μ_j[b], with block = C_ij (looked up once
  // per block by the callers: these loops run over every entry).
  double uncentred(const T* block, const std::vector<double>& mean, int i, int j, std::int64_t a,
                   std::int64_t b) const {
    const std::int64_t W = shape_.width();
    return double(block[a + b * W]) + double(shape_.tokens) * mean[i * W + a] * mean[j * W + b];
  }

  void similarity(const std::vector<double>& mean, CrossLayerResult& result) const {
    const int L = shape_.layers;
    const std::int64_t W = shape_.width();
    result.cka = MatrixXd::Zero(L, L);
    result.channel_cosine = MatrixXd::Zero(L, L);
    std::vector<double> self(static_cast<std::size_t>(L));
    for (int i = 0; i < L; ++i) self[static_cast<std::size_t>(i)] = std::sqrt(frobenius2(gram_->block(i, i), W));
    for (int i = 0; i < L; ++i) {
      for (int j = i; j < L; ++j) {
        const double denom = self[static_cast<std::size_t>(i)] * self[static_cast<std::size_t>(j)];
        const double cka = denom > 0 ? frobenius2(gram_->block(i, j), W) / denom : std::nan("");
        double cos_sum = 0;
        std::int64_t channels = 0;
        const T *cii = gram_->block(i, i), *cjj = gram_->block(j, j), *cij = gram_->block(i, j);
        for (std::int64_t c = 0; c < W; ++c) {
          const double uii = uncentred(cii, mean, i, i, c, c), ujj = uncentred(cjj, mean, j, j, c, c);
          if (uii <= 0 || ujj <= 0) continue;
          cos_sum += uncentred(cij, mean, i, j, c, c) / std::sqrt(uii * ujj);
          ++channels;
        }
        const double cos = channels > 0 ? cos_sum / double(channels) : std::nan("");
        result.cka(i, j) = result.cka(j, i) = cka;
        result.channel_cosine(i, j) = result.channel_cosine(j, i) = cos;
      }
    }
  }

  // Group spectra are independent eigensolves: run them on all BLAS threads side by side,
  // one single-threaded solve each (the tridiagonal stage of ?syevd scales poorly with threads).
  void eigen_rank(const std::vector<double>& mean, CrossLayerResult& result) {
    std::vector<GroupJob> jobs;
    for (std::size_t s = 0; s < options_.group_sizes.size(); ++s) {
      const int G = options_.group_sizes[s];
      if (G < 1) fail("group size {} must be at least 1", G);
      GroupSizeRank entry;
      entry.group_size = G;
      const GramSide side = choose_side(shape_, options_, G);
      const std::int64_t order = side == GramSide::token ? shape_.tokens : std::int64_t{G} * shape_.width();
      for (int first = 0; first + G <= shape_.layers; first += G) {
        jobs.push_back({s, entry.groups.size(), first, G, side, order});
        GroupRank group;
        group.first_layer = first;
        group.size = G;
        group.side = side;
        group.gram_order = order;
        entry.groups.push_back(std::move(group));
      }
      result.eigen_rank.push_back(std::move(entry));
    }
    // Largest solves first (their cost grows as order³), so the small ones fill in at the end.
    std::stable_sort(jobs.begin(), jobs.end(), [](const GroupJob& a, const GroupJob& b) { return a.order > b.order; });

    const int workers = std::max(1, std::min<int>(backend_.threads(), static_cast<int>(jobs.size())));
    const linalg::OneThreadPerCall fan_out(backend_, workers);
    std::atomic<std::size_t> next{0};
    std::atomic<std::int64_t> finished{0};
    std::mutex error_mutex;
    std::exception_ptr error;
    auto work = [&](int w) {
      try {
        linalg::Backend& solver = backend_.worker(w);  // on CUDA a stream of its own per thread
        for (std::size_t k = next++; k < jobs.size(); k = next++) {
          const GroupJob& job = jobs[k];
          result.eigen_rank[job.size_index].groups[job.group_index].spectrum = group_spectrum(mean, job, solver);
          if (options_.on_progress) options_.on_progress("eigen-rank", ++finished, std::int64_t(jobs.size()));
        }
      } catch (...) {
        std::lock_guard lock(error_mutex);
        error = std::current_exception();
      }
    };
    std::vector<std::thread> threads;
    for (int w = 1; w < workers; ++w) threads.emplace_back(work, w);
    work(0);
    for (auto& t : threads) t.join();
    if (error) std::rethrow_exception(error);

    for (auto& entry : result.eigen_rank) {
      entry.mean_rank_fraction.assign(options_.energies.size(), 0.0);
      for (auto& group : entry.groups) {
        const double columns = double(group.size) * double(shape_.width());
        for (std::size_t e = 0; e < options_.energies.size(); ++e) {
          const std::int64_t r = rank_for_energy(group.spectrum, options_.energies[e]);
          group.rank.push_back(r);
          group.rank_fraction.push_back(double(r) / columns);
          entry.mean_rank_fraction[e] += group.rank_fraction.back() / double(entry.groups.size());
          if (e + 1 == options_.energies.size() && r > 0 && group.spectrum[0] > 0)
            result.min_kept_sigma_ratio = std::min(result.min_kept_sigma_ratio,
                                                   std::sqrt(group.spectrum[std::size_t(r - 1)] / group.spectrum[0]));
        }
      }
    }
  }

  // Eigenvalues (descending, clamped at 0) of the uncentred Gram of layers [first, first+G):
  // G·H·D of them on either side (the token side's beyond T are zeros).
  std::vector<double> group_spectrum(const std::vector<double>& mean, const GroupJob& job,
                                     linalg::Backend& solver) const {
    if (job.side == GramSide::token) return token_spectrum(job, solver);
    const std::int64_t W = shape_.width(), D = std::int64_t{job.size} * W;
    std::vector<T> s(static_cast<std::size_t>(D * D));
    for (int a = 0; a < job.size; ++a)
      for (int b = a; b < job.size; ++b) {
        const int i = job.first_layer + a, j = job.first_layer + b;
        const T* cij = gram_->block(i, j);
        for (std::int64_t col = 0; col < W; ++col)
          for (std::int64_t row = 0; row < W; ++row)
            s[std::size_t((a * W + row) + (b * W + col) * D)] = T(uncentred(cij, mean, i, j, row, col));
      }
    std::vector<T> w(static_cast<std::size_t>(D));
    solver.eigvalsh(s.data(), D, D, w.data());
    std::vector<double> spectrum(w.rbegin(), w.rend());
    for (double& v : spectrum) v = std::max(v, 0.0);
    return spectrum;
  }

  // The same spectrum from the T×T token Gram K = Σ_l X_l X_lᵀ = Z_g Z_gᵀ of the kept raw rows:
  // the group's layers lie one after another channel-major, so Z_gᵀ is a row-major
  // G·H·D × T matrix and K one backend SYRK (gram) of it.
  std::vector<double> token_spectrum(const GroupJob& job, linalg::Backend& solver) const {
    const std::int64_t n = shape_.tokens, columns = std::int64_t{job.size} * shape_.width();
    if (job.first_layer + job.size > kept_layers_)
      fail("analysis: layers {}..{} were not kept for the token Gram", job.first_layer, job.first_layer + job.size - 1);
    std::vector<T> k(static_cast<std::size_t>(n * n));
    solver.gram(kept_layer(job.first_layer), columns, n, n, T(1), T(0), k.data(), n);
    std::vector<T> w(static_cast<std::size_t>(n));
    solver.eigvalsh(k.data(), n, n, w.data());
    std::vector<double> spectrum(static_cast<std::size_t>(columns), 0.0);
    for (std::int64_t i = 0; i < std::min(n, columns); ++i)
      spectrum[static_cast<std::size_t>(i)] = std::max(double(w[static_cast<std::size_t>(n - 1 - i)]), 0.0);
    return spectrum;
  }

  T* kept_layer(int l) { return kept_.data() + std::int64_t{l} * shape_.width() * shape_.tokens; }
  const T* kept_layer(int l) const { return kept_.data() + std::int64_t{l} * shape_.width() * shape_.tokens; }

  LayerShape shape_;
  const AnalysisOptions& options_;
  linalg::Backend& backend_;
  std::unique_ptr<linalg::PanelGram<T>> gram_;  // the upper block triangle of Z̃ᵀZ̃, Z = [X_1 … X_L]
  int kept_layers_;                             // P: layers [0, P) are kept for token-side groups
  std::vector<T> kept_;                         // their raw rows, layer l's channel c at (l·H·D + c)·T
};

void validate(const LayerShape& shape, const AnalysisOptions& options) {
  if (shape.layers < 1 || shape.heads < 1 || shape.head_dim < 1 || shape.tokens < 1)
    fail("analysis needs at least one layer, head, channel and token (got L={}, H={}, D={}, T={})", shape.layers,
         shape.heads, shape.head_dim, shape.tokens);
  if (options.token_block < 1) fail("token block must be at least 1 (got {})", options.token_block);
  for (double e : options.energies)
    if (!(e > 0 && e <= 1)) fail("energy level {} is outside (0, 1]", e);
  for (int g : options.group_sizes)
    if (g < 1 || g > shape.layers) fail("group size {} is outside 1..{} (the number of layers)", g, shape.layers);
}

}  // namespace

std::string_view to_string(GramSide side) { return side == GramSide::token ? "token" : "column"; }

CrossLayerResult analyze_cross_layer(const LayerShape& shape, const RowReader& read_rows,
                                     const AnalysisOptions& options, linalg::Backend& backend) {
  validate(shape, options);
  CrossLayerResult result;
  result.shape = shape;
  result.energies = options.energies;
  const int L = shape.layers;
  const std::int64_t W = shape.width(), cap = std::min(options.token_block, shape.tokens);

  // Pass 1: column means and token-wise cosines.
  std::vector<double> mean(static_cast<std::size_t>(L * W), 0.0);
  const auto start = std::chrono::steady_clock::now();
  {
    LayerBlock<float> block(L, cap, W);
    CosineAccumulator cosine(shape, cap);
    std::int64_t done = 0;
    for_each_block(shape, cap, [&](std::int64_t t0, std::int64_t rows) {
      for_each_layer(L, [&](int l) {  // read, sum and normalise each layer's rows on its thread
        float* x = block.layer(l);
        read_rows(l, t0, rows, std::span<float>(x, static_cast<std::size_t>(rows * W)));
        double* mu = mean.data() + std::int64_t{l} * W;
        for (std::int64_t t = 0; t < rows; ++t)
          for (std::int64_t c = 0; c < W; ++c) mu[c] += x[t * W + c];
        cosine.normalize(block, l, rows);
      });
      cosine.add(block, rows);
      done += rows;
      if (options.on_progress) options.on_progress("means and cosines", done, shape.tokens);
    });
    cosine.finish(result);
  }
  for (double& m : mean) m /= double(shape.tokens);
  result.timings.means_and_cosines = seconds_since(start);

  // Pass 2: centred cross-products, then CKA, channel cosine and eigen-rank.
  if (options.cka) {
    if (options.precision == GramPrecision::f64)
      GramAnalysis<double>(shape, options, backend).run(read_rows, mean, result);
    else
      GramAnalysis<float>(shape, options, backend).run(read_rows, mean, result);
  }
  return result;
}

}  // namespace kvlab::analysis
