// linalg::Backend: the dense linear algebra kvlab needs, behind one API so the CPU
// (OpenBLAS + LAPACKE, cpu/) and CUDA (cuBLAS + cuSOLVER, cuda/) paths are interchangeable.
//
// Conventions: matrices are column-major with an explicit leading dimension (the BLAS /
// LAPACK convention). A token-major block of KV rows, X ∈ R^{n×c} stored row-major with row
// stride ldx, is the column-major matrix Xᵀ (c×n, ld = ldx), so `gram` takes it as it lies in
// memory. Symmetric matrices use the upper triangle only. Eigenvalues come back ascending
// (LAPACK's order): the top r are the last r.
//
// Precision: forming a Gram squares the condition number; singular values below √u·σ₁ of
// the Gram's precision are noise (u = 6e-8 in f32, 1e-16 in f64; docs/performance.md §4). Use
// the f64 overloads where the kept tail is small (σ_r/σ₁ ≲ 1e-3).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <type_traits>
#include <vector>

namespace kvlab::linalg {

// The arithmetic of a Gram C = XᵀX accumulated from f32 data (docs/performance.md §1, §4):
//   f32   FP32 products and sums (SIMT on the GPU): entries good to ≈ u₃₂·(|X|ᵀ|X|)_ij
//   tf32  inputs rounded to TF32 (10-bit mantissa), products summed in f32: tensor cores,
//         ≈ 7× the FP32 rate on Hopper; entries good to ≈ 2·2⁻¹¹·(|X|ᵀ|X|)_ij
//   bf16  inputs rounded to bfloat16 (7-bit mantissa), products summed in f32: tensor cores at
//         2× TF32 and half the bytes to copy; entries good to ≈ 2·2⁻⁸·(|X|ᵀ|X|)_ij
//   f64   inputs widened to f64, FP64 products and sums (the only choice for tails below
//         √u₃₂·σ₁ ≈ 2.4e-4·σ₁)
// The base (host) PanelGram, which the CPU backend uses, emulates tf32 and bf16 by rounding its
// copy of the inputs (round to nearest even) and running the FP32 routine: bf16 then agrees with
// the GPU to f32 summation order (both round on the host); tf32 to one TF32 ulp of the inputs,
// should cuBLAS round its inputs otherwise.
enum class GramPrecision { f32, tf32, bf16, f64 };
std::string_view to_string(GramPrecision precision);  // "f32" | "tf32" | "bf16" | "f64"
// Fails listing the choices on anything else.
GramPrecision parse_gram_precision(std::string_view name);
// √u of the Gram's inputs (u: the unit roundoff of what the products see: 2⁻²⁴ f32, 2⁻¹¹ tf32,
// 2⁻⁸ bf16, 2⁻⁵³ f64): singular values below ≈ this·σ₁ are lost in a Gram of that precision.
double gram_sigma_floor(GramPrecision precision);
// Rounds f32 values in place to what tf32 / bf16 inputs keep (round to nearest even; f32 and
// f64 leave them unchanged). Infinities and NaNs pass through.
void round_gram_inputs(GramPrecision precision, std::span<float> values);

// The upper block triangle of ZᵀZ for Z = [Z_0 … Z_{P−1}], P column panels of `width` columns
// each, accumulated over token blocks of up to `capacity` rows. The caller fills staging() with
// one block — panel p's rows at staging() + p·capacity·width, row-major [rows × width] — and
// hands it over with add(rows); after the last block, finish() and read block(i, j).
// T is the type the products are accumulated (and returned) in: float for f32/tf32/bf16, double
// for f64 (the caller widens its data into the double staging block).
// The CUDA implementation keeps the blocks on the device, stages through two pinned buffers
// and copies one block up while the previous one's products run, so staging() may wait for an
// upload two blocks back; the host one computes synchronously in add().
template <typename T>
class PanelGram {
 public:
  PanelGram(int panels, std::int64_t width, std::int64_t capacity)
      : panels_(panels), width_(width), capacity_(capacity) {}
  virtual ~PanelGram() = default;
  PanelGram(const PanelGram&) = delete;
  PanelGram& operator=(const PanelGram&) = delete;

  int panels() const { return panels_; }
  std::int64_t width() const { return width_; }
  std::int64_t capacity() const { return capacity_; }
  std::int64_t panel_stride() const { return capacity_ * width_; }

  // The block to fill next: panels·capacity·width values. add() may overwrite it (rounding).
  virtual T* staging() = 0;
  // Accumulates the first `rows` (≤ capacity) rows of every panel of the staging block.
  virtual void add(std::int64_t rows) = 0;
  // Waits for every queued product; afterwards block(i, j) is valid and add() is not allowed.
  virtual void finish() = 0;
  // Block (i, j), i ≤ j: width × width column-major, Σ_t Z_i[t]ᵀ·Z_j[t]; diagonal blocks are
  // complete (both triangles).
  virtual const T* block(int i, int j) const = 0;

 protected:
  std::size_t block_index(int i, int j) const {
    return static_cast<std::size_t>(i * panels_ - i * (i - 1) / 2 + (j - i));
  }
  std::size_t block_count() const { return static_cast<std::size_t>(panels_ * (panels_ + 1) / 2); }

 private:
  int panels_;
  std::int64_t width_, capacity_;
};

// Fails naming the shape unless panels, width and capacity are all ≥ 1 (the PanelGram factories).
void check_panel_gram_shape(int panels, std::int64_t width, std::int64_t capacity);

// A rank-r approximation X ≈ A·V_rᵀ with A = X·V_r, as the low-rank compressors store it.
struct SubspaceFactors {
  std::int64_t rank = 0;
  std::vector<double> energy;  // [rank] Gram route: σ_i² (its eigenvalues, clamped at 0); randomized: ‖X·v_i‖²
  std::vector<float> v;        // [c × rank] column-major: right singular vectors, by descending σ
  std::vector<float> a;        // [n × rank] row-major: A = X·V_r (f32 products)

  // Makes each component's largest-magnitude entry of v positive (the first such entry on a
  // tie), negating A's column with it. Eigensolvers return ±v_i as they please (LAPACK and
  // cuSOLVER differ), which leaves A·V_rᵀ unchanged but not anything derived from the factors
  // themselves, such as a quantizer chained after xkv: with fixed signs the CPU and the GPU
  // store the same factors. A flipped input gives bit-identical output (negation is exact).
  void canonicalize_signs();
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string_view name() const = 0;

  // C ← α·XᵀX + β·C for X = n token rows × c columns, row-major with row stride ldx ≥ c.
  // C is c×c column-major (ld ldc ≥ c); only its upper triangle is read and written.
  virtual void gram(const float* x, std::int64_t n, std::int64_t c, std::int64_t ldx, float alpha, float beta,
                    float* out, std::int64_t ldc) = 0;
  virtual void gram(const double* x, std::int64_t n, std::int64_t c, std::int64_t ldx, double alpha, double beta,
                    double* out, std::int64_t ldc) = 0;

  // C ← α·op(A)·op(B) + β·C, column-major; op(A) is m×k, op(B) is k×n.
  virtual void gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha,
                    const float* a, std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c,
                    std::int64_t ldc) = 0;
  virtual void gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, double alpha,
                    const double* a, std::int64_t lda, const double* b, std::int64_t ldb, double beta, double* c,
                    std::int64_t ldc) = 0;

  // Eigenvalues of the symmetric n×n matrix S (upper triangle; S is destroyed) into w[n],
  // ascending. Divide and conquer (?syevd), values only.
  virtual void eigvalsh(float* s, std::int64_t n, std::int64_t lds, float* w) = 0;
  virtual void eigvalsh(double* s, std::int64_t n, std::int64_t lds, double* w) = 0;

  // Full eigendecomposition (?syevd): w[n] ascending, S overwritten by the orthonormal
  // eigenvectors (column i belongs to w[i]).
  virtual void eigh(float* s, std::int64_t n, std::int64_t lds, float* w) = 0;
  virtual void eigh(double* s, std::int64_t n, std::int64_t lds, double* w) = 0;

  // The r largest eigenpairs (?syevr by index): w[r] ascending, vectors [n×r] (ld ldv).
  // S is destroyed.
  virtual void eigh_top(float* s, std::int64_t n, std::int64_t lds, std::int64_t r, float* w, float* vectors,
                        std::int64_t ldv) = 0;
  virtual void eigh_top(double* s, std::int64_t n, std::int64_t lds, std::int64_t r, double* w, double* vectors,
                        std::int64_t ldv) = 0;

  // Thin SVD (?gesdd, never ?gesvd) of A (m×n column-major, destroyed), k = min(m, n):
  // sigma[k] descending; u [m×k] and vt [k×n] when non-null (both or neither).
  virtual void svd_thin(float* a, std::int64_t m, std::int64_t n, std::int64_t lda, float* sigma, float* u,
                        std::int64_t ldu, float* vt, std::int64_t ldvt) = 0;
  virtual void svd_thin(double* a, std::int64_t m, std::int64_t n, std::int64_t lda, double* sigma, double* u,
                        std::int64_t ldu, double* vt, std::int64_t ldvt) = 0;

  // Orthonormal basis of the range of A (m×n column-major, m ≥ n, overwritten): A ← Q of the
  // Householder QR A = QR (?geqrf + ?orgqr). Unlike CholQR its orthogonality does not degrade
  // with κ(A) (docs/performance.md §5), which the randomized SVD's re-orthonormalisation needs.
  virtual void orthonormalize(float* a, std::int64_t m, std::int64_t n, std::int64_t lda) = 0;
  virtual void orthonormalize(double* a, std::int64_t m, std::int64_t n, std::int64_t lda) = 0;

  // A PanelGram that runs on this backend. The base version works for any backend through
  // gram/gemm with host pointers; the CUDA backend keeps the blocks on the device. precision:
  // f32, tf32 or bf16 (f64 needs panel_gram_f64).
  virtual std::unique_ptr<PanelGram<float>> panel_gram(int panels, std::int64_t width, std::int64_t capacity,
                                                       GramPrecision precision);
  virtual std::unique_ptr<PanelGram<double>> panel_gram_f64(int panels, std::int64_t width, std::int64_t capacity);

  // Top-r (1 ≤ r ≤ c) right singular subspace of X = n rows × c columns (row-major, ld c)
  // by the Gram route: C = XᵀX in `precision`, its r largest eigenpairs (precision f64: in f64,
  // else f32), A = X·V_r in f32. The base version streams X through panel_gram and calls
  // eigh_top and gemm; the CUDA backend uploads X once and keeps it on the device between the
  // Gram and the projection.
  virtual SubspaceFactors gram_subspace(const float* x, std::int64_t n, std::int64_t c, std::int64_t r,
                                     GramPrecision precision);

  // HMT Alg. 4.4 (docs/performance.md §5) for the top-r right singular subspace of X = n rows × c
  // columns (row-major, ld c): a Gaussian Ω [c × ℓ], ℓ = min(r + oversample, n, c), drawn from
  // (seed, stream) by randomized_sketch(); Y = X·Ω, then `iters` rounds of Xᵀ·Q and X·Q, each
  // Householder-orthonormalised; V_r = the top r right singular vectors of QᵀX (an ℓ × c SVD,
  // in f64 when small_svd_f64). Products in f32. The base version calls gemm/orthonormalize with
  // host pointers; the CUDA backend keeps X, Y and W on the device throughout.
  struct RandomizedOptions {
    std::int64_t oversample = 10, iters = 2;
    std::uint64_t seed = 0, stream = 0;
    bool small_svd_f64 = true;
  };
  virtual SubspaceFactors randomized_subspace(const float* x, std::int64_t n, std::int64_t c, std::int64_t r,
                                              const RandomizedOptions& options);

  // ---- Resident data: pointers to memory where the backend computes (host memory for the CPU
  // backend, device memory of device 0 for CUDA), for callers whose data already lives there
  // (the harness's CUDA tensors): nothing crosses to the host but what a call returns. `stream`
  // is the caller's queue (a cudaStream_t as void*; null is the default stream; the CPU backend
  // ignores it).

  // gram_subspace's eigenpairs without A: v [c × r] and energy [r] on the host (a empty), of the
  // Gram of resident X = n rows × c columns (row-major, ld c) in `precision`. x is X in f32;
  // gram_input is X as the Gram's inputs for bf16 (bfloat16 bits, uint16) and f64 (double),
  // null for f32 and tf32 (x is used). Starts after the work queued on `stream`; returns when
  // done. The base version reads x through host pointers (and ignores gram_input).
  virtual SubspaceFactors resident_gram_top(const float* x, const void* gram_input, std::int64_t n, std::int64_t c,
                                            std::int64_t r, GramPrecision precision, void* stream);
  // Whether resident_gram_top reads gram_input at this precision (else the caller may pass null
  // and skip the conversion): the base version rounds or widens x itself and never does.
  virtual bool resident_gram_reads_input(GramPrecision) const { return false; }
  // randomized_subspace's V_r without A: v [c × r] on the host (energy and a empty; A = X·V_r is
  // the caller's product), for resident X = n rows × c columns (row-major, ld c): the same Ω from
  // (seed, stream) and the same finish, so it equals randomized_subspace's v. Starts after the
  // work queued on `stream`; returns when done.
  virtual SubspaceFactors resident_randomized_top(const float* x, std::int64_t n, std::int64_t c, std::int64_t r,
                                                  const RandomizedOptions& options, void* stream);
  // gemm (f32) on resident pointers, queued on `stream`: on CUDA it may return before the
  // product is done; later work on the same stream sees it.
  virtual void resident_gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha,
                             const float* a, std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c,
                             std::int64_t ldc, void* stream);

  // Threads the backend may use inside one call (0 = its default). Callers with many
  // independent calls (analysis' eigen-rank solves) run up to threads() of them at once, one
  // host thread each, thread w calling worker(w) (and setting threads to 1 meanwhile).
  virtual void set_threads(int threads) = 0;
  virtual int threads() const = 0;
  // The backend for host thread w of such a fan-out. The CPU backend is reentrant: itself.
  virtual Backend& worker(int w) {
    (void)w;
    return *this;
  }
};

// The process-wide CPU backend (OpenBLAS + LAPACKE).
Backend& cpu_backend();

// out.v [c × r] and out.energy [r] from eigh_top's r eigenpairs (ascending, vectors c × r
// column-major): largest first, eigenvalues clamped at 0 (the Gram route of every backend).
template <typename R>
void take_top_eigenpairs(const std::vector<R>& values, const std::vector<R>& vectors, std::int64_t c, std::int64_t r,
                         SubspaceFactors& out) {
  out.v.resize(static_cast<std::size_t>(c * r));
  out.energy.resize(static_cast<std::size_t>(r));
  for (std::int64_t j = 0; j < r; ++j) {
    const std::int64_t src = r - 1 - j;
    for (std::int64_t i = 0; i < c; ++i)
      out.v[static_cast<std::size_t>(j * c + i)] = static_cast<float>(vectors[static_cast<std::size_t>(src * c + i)]);
    out.energy[static_cast<std::size_t>(j)] = values[static_cast<std::size_t>(src)] > 0 ? double(values[static_cast<std::size_t>(src)]) : 0.0;
  }
}

// The working buffers of token_gram_subspace (Xᵀ widened, K, U_r, V_r: 100+ MiB at n = 2048,
// c = 4096 in f64), kept by a caller that decomposes several matrices: glibc maps blocks over
// 32 MiB afresh on every allocation, and faulting them in cost ~0.4 s of a 1.8 s decomposition
// (bench/README.md, "xkv").
struct TokenGramScratch {
  template <typename R>
  struct Buffers {
    std::vector<R> xt, gram, top, scaled, v;
  };
  Buffers<double> f64;
  Buffers<float> f32;
};

// gram_subspace's factors from the other side, for X with fewer rows than columns (n ≤ c, row-major,
// ld c): K = X·Xᵀ (n×n) in f64 or f32 (`f64`), its top r eigenpairs (λ_j = σ_j², U_r), V_r =
// Xᵀ·U_r·Σ_r⁻¹ Householder-orthonormalised (a zero σ_j's column completed to an orthonormal
// basis, its energy 0), A = X·V_r in f32. Needs 1 ≤ r ≤ n ≤ c. Built from the backend's gram,
// eigh_top, gemm and orthonormalize on host pointers; `scratch` (optional) carries the buffers
// from call to call.
SubspaceFactors token_gram_subspace(Backend& backend, const float* x, std::int64_t n, std::int64_t c, std::int64_t r,
                                    bool f64, TokenGramScratch* scratch = nullptr);

// Pieces of randomized_subspace that every backend shares (so their results agree):
// Ω [c × ℓ] column-major, N(0, 1) from a mt19937_64 seeded by (seed, stream);
std::vector<float> randomized_sketch(std::int64_t c, std::int64_t ell, std::uint64_t seed, std::uint64_t stream);
// the top r right singular vectors of QᵀX from W = XᵀQ [c × ℓ] (W's left singular vectors), by
// backend.svd_thin in f64 or f32 (W is consumed), into v [c × r];
void sketch_top_vectors(Backend& backend, std::vector<float>& w, std::int64_t c, std::int64_t ell, std::int64_t r,
                        bool f64, std::vector<float>& v);
// energy_j = Σ_t A[t, j]² for A [n × r] row-major.
std::vector<double> column_energies(const std::vector<float>& a, std::int64_t n, std::int64_t r);

// make_panel_gram<T>: panel_gram (float) or panel_gram_f64 (double) for templated callers.
template <typename T>
std::unique_ptr<PanelGram<T>> make_panel_gram(Backend& backend, int panels, std::int64_t width, std::int64_t capacity,
                                              GramPrecision precision) {
  if constexpr (std::is_same_v<T, double>)
    return backend.panel_gram_f64(panels, width, capacity);
  else
    return backend.panel_gram(panels, width, capacity, precision);
}

// Fills the strictly lower triangle of an n×n column-major matrix from its upper triangle.
template <typename T>
void symmetrize_from_upper(T* s, std::int64_t n, std::int64_t lds) {
  for (std::int64_t j = 0; j < n; ++j)
    for (std::int64_t i = j + 1; i < n; ++i) s[i + j * lds] = s[j + i * lds];
}

}  // namespace kvlab::linalg
