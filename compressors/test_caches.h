// Test fixtures shared by the compressor tests: small caches with known structure.
#pragma once

#include <functional>
#include <set>
#include <string>

#include "compressors/cache_source.h"
#include "compressors/compressed.h"
#include "compressors/compressor.h"
#include "compressors/score.h"
#include "core/error_of.h"
#include "linalg/backend.h"
#include "datasets/synth_kv.h"

namespace kvlab::compressors::testing {

// 4 layers, 2 KV heads, 4 query heads, head_dim 16, 512 tokens, query window 16, f32, noise 0.02.
datasets::SynthConfig small_synth_config();
// The synthetic generator's cache, held in memory (RoPE: identity, as its dumps declare).
InMemoryCache synthetic_cache(const datasets::SynthConfig& config, int sample = 0);
// A cache of i.i.d. N(0,1) keys, values and queries (no structure), with a real RoPE
// (θ = 10000) and positions 0..T−1: a worst case for every method.
InMemoryCache random_cache(const CacheShape& shape, std::uint64_t seed, bool with_rope = true);

// The bytes of a transform's stored form: packs its fp16 tensors first, as the chain does (the
// values become their fp16 decoding), then sums the packed sizes.
std::int64_t stored_bytes(Compressed& compressed);

// Brute-force attention of window row w, query head h over keys/values [T, H_kv, D] (pre-RoPE),
// rotating each row on its own with the layer's RoPE, causal by position and, under the layer's
// sliding window w, only keys j with i − w < j ≤ i for the query at i, cells outside `kept` (empty:
// all) excluded; softmax in double. p [T] the probabilities, o [D] the output.
void brute_attention(const CacheSource& c, int layer, const FloatTensor& key, const FloatTensor& value,
                     const std::vector<std::uint8_t>& kept, int w, int h, std::vector<double>& p,
                     std::vector<double>& o);

// The tokens KV head g of layer `layer` keeps in `masks`.
std::set<std::int64_t> kept_tokens(const KeepMasks& masks, int layer, int g, const CacheShape& shape);

// Layer `layer`'s keys [T, H, D] after its RoPE (rope(layer)), in double: HF's rotate_half (dimension j pairs with
// j + R/2 over the first R = 2·|inv_freq| dimensions), angle p·inv_freq[j], each row on its own.
std::vector<double> post_rope_keys(const CacheSource& c, int layer);

// The indices of the n highest scores, ties to the earlier index (torch.topk leaves their order
// unspecified; kvlab's keep_top_scores takes the earlier).
std::set<std::int64_t> top_n(const std::vector<double>& score, std::int64_t n);

// A source that fails on anything but keys: what the resident route (DevicePath::scores) relies
// on when a method reads only a layer's keys.
class KeysOnly final : public CacheSource {
 public:
  explicit KeysOnly(const CacheSource& base) : base_(base) {}
  const CacheShape& shape() const override { return base_.shape(); }
  FloatTensor layer(int layer, Part part) const override;
  FloatTensor queries(int layer) const override;
  const std::vector<std::int64_t>& positions() const override { return base_.positions(); }
  using CacheSource::rope;
  const core::Rope& rope(int layer) const override { return base_.rope(layer); }
  int window(int layer) const override { return base_.window(layer); }
  std::string describe() const override { return "keys only"; }
  FloatTensor resident_window_attention_sums(int layer, int rows) const override;

 private:
  const CacheSource& base_;
};

// An eviction spec ("knorm:keep=0.5") chained with KIVI (4 bits, groups of 8, no residual) on
// `cache`: checks that the chain keeps the stage's own masks and that scoring it one layer at a
// time gives the whole cache's figures and notes. Returns the whole cache's Score.
Score expect_eviction_chains_with_kivi(const std::string& eviction_spec, const CacheSource& cache);

// The CPU backend, but every subspace comes back with every other component negated (v and A):
// what a different eigensolver (cuSOLVER on the GPU) may return for the same matrix. With
// `reads_gram_input` its resident_gram_top also asks for the Gram's converted inputs at bf16
// and f64, as the CUDA backend does, and fails unless they are x rounded to bfloat16 / widened.
class SignFlippingBackend final : public linalg::Backend {
 public:
  explicit SignFlippingBackend(bool reads_gram_input = false) : reads_gram_input_(reads_gram_input) {}
  int gram_inputs_checked = 0;
  linalg::SubspaceFactors resident_gram_top(const float* x, const void* gram_input, std::int64_t n, std::int64_t c,
                                            std::int64_t r, linalg::GramPrecision precision, void* stream) override;
  bool resident_gram_reads_input(linalg::GramPrecision precision) const override {
    return reads_gram_input_ && (precision == linalg::GramPrecision::bf16 || precision == linalg::GramPrecision::f64);
  }

  std::string_view name() const override { return "cpu, signs flipped"; }
  void gram(const float* x, std::int64_t n, std::int64_t c, std::int64_t ldx, float alpha, float beta, float* out,
            std::int64_t ldc) override {
    cpu().gram(x, n, c, ldx, alpha, beta, out, ldc);
  }
  void gram(const double* x, std::int64_t n, std::int64_t c, std::int64_t ldx, double alpha, double beta, double* out,
            std::int64_t ldc) override {
    cpu().gram(x, n, c, ldx, alpha, beta, out, ldc);
  }
  void gemm(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const float* a,
            std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c, std::int64_t ldc) override {
    cpu().gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  }
  void gemm(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, double alpha, const double* a,
            std::int64_t lda, const double* b, std::int64_t ldb, double beta, double* c, std::int64_t ldc) override {
    cpu().gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  }
  void eigvalsh(float* s, std::int64_t n, std::int64_t lds, float* w) override { cpu().eigvalsh(s, n, lds, w); }
  void eigvalsh(double* s, std::int64_t n, std::int64_t lds, double* w) override { cpu().eigvalsh(s, n, lds, w); }
  void eigh(float* s, std::int64_t n, std::int64_t lds, float* w) override { cpu().eigh(s, n, lds, w); }
  void eigh(double* s, std::int64_t n, std::int64_t lds, double* w) override { cpu().eigh(s, n, lds, w); }
  void eigh_top(float* s, std::int64_t n, std::int64_t lds, std::int64_t r, float* w, float* v,
                std::int64_t ldv) override {
    cpu().eigh_top(s, n, lds, r, w, v, ldv);
  }
  void eigh_top(double* s, std::int64_t n, std::int64_t lds, std::int64_t r, double* w, double* v,
                std::int64_t ldv) override {
    cpu().eigh_top(s, n, lds, r, w, v, ldv);
  }
  void svd_thin(float* a, std::int64_t m, std::int64_t n, std::int64_t lda, float* sigma, float* u, std::int64_t ldu,
                float* vt, std::int64_t ldvt) override {
    cpu().svd_thin(a, m, n, lda, sigma, u, ldu, vt, ldvt);
  }
  void svd_thin(double* a, std::int64_t m, std::int64_t n, std::int64_t lda, double* sigma, double* u,
                std::int64_t ldu, double* vt, std::int64_t ldvt) override {
    cpu().svd_thin(a, m, n, lda, sigma, u, ldu, vt, ldvt);
  }
  void orthonormalize(float* a, std::int64_t m, std::int64_t n, std::int64_t lda) override {
    cpu().orthonormalize(a, m, n, lda);
  }
  void orthonormalize(double* a, std::int64_t m, std::int64_t n, std::int64_t lda) override {
    cpu().orthonormalize(a, m, n, lda);
  }
  linalg::SubspaceFactors gram_subspace(const float* x, std::int64_t n, std::int64_t c, std::int64_t r,
                                        linalg::GramPrecision precision) override {
    return flipped(cpu().gram_subspace(x, n, c, r, precision));
  }
  linalg::SubspaceFactors randomized_subspace(const float* x, std::int64_t n, std::int64_t c, std::int64_t r,
                                              const RandomizedOptions& options) override {
    return flipped(cpu().randomized_subspace(x, n, c, r, options));
  }
  linalg::SubspaceFactors resident_randomized_top(const float* x, std::int64_t n, std::int64_t c, std::int64_t r,
                                                  const RandomizedOptions& options, void* stream) override {
    return flipped(cpu().resident_randomized_top(x, n, c, r, options, stream));
  }
  void set_threads(int threads) override { cpu().set_threads(threads); }
  int threads() const override { return cpu().threads(); }

 private:
  bool reads_gram_input_;
  static linalg::Backend& cpu() { return linalg::cpu_backend(); }
  static linalg::SubspaceFactors flipped(linalg::SubspaceFactors f) {
    const auto r = static_cast<std::size_t>(f.rank), c = f.v.size() / r, n = f.a.size() / r;
    for (std::size_t j = 0; j < r; j += 2) {
      for (std::size_t i = 0; i < c; ++i) f.v[j * c + i] = -f.v[j * c + i];
      for (std::size_t t = 0; t < n; ++t) f.a[t * r + j] = -f.a[t * r + j];
    }
    return f;
  }
};

using core::error_of;  // the message of the kvlab::Error `f` throws, or "(no error)"

}  // namespace kvlab::compressors::testing
