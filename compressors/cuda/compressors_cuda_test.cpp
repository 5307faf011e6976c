// Every compressor on the CUDA backend vs the CPU backend: the same cache, the same spec, and
// the scores (per-layer K/V relative errors, attention-output error, KL, bytes) compared with a
// stated tolerance. Methods that only select or quantize must agree exactly in bytes; the
// low-rank ones to their Gram precision. commonkv is left out: it needs a checkpoint, and its
// linear algebra (the SVD of stacked weights) is the svd_thin that linalg_cuda_tests checks.
// Skips without a device.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "compressors/chain.h"
#include "compressors/score.h"
#include "compressors/test_caches.h"
#include "linalg/cuda/cuda_backend.h"

namespace kvlab::compressors {
namespace {

Score run(const CacheSource& cache, const std::string& spec, linalg::Backend& backend) {
  const CompressContext ctx{cache, backend, nullptr};
  auto compressed = compress_chain(ctx, parse_spec(spec));
  return score(cache, *compressed, backend);
}

TEST(CompressorsCuda, EveryMethodScoresAsOnTheCpu) {
  if (!linalg::cuda_available()) GTEST_SKIP() << "no CUDA device (" << linalg::cuda_unavailable_reason() << ")";
  const auto cache = testing::synthetic_cache(testing::small_synth_config());
  struct Case {
    const char* spec;
    double tol;  // on every relative error and on KL, absolute
  };
  for (const Case& c : {Case{"full", 1e-6}, Case{"svd:rk=8,rv=12", 1e-4}, Case{"xkv:g=2,rk=12,rv=16", 1e-4},
                        Case{"xkv:g=2,rk=12,rv=16,precision=f32", 1e-4},
                        Case{"xkv:g=2,rk=12,rv=16,precision=tf32", 1e-3},
                        Case{"xkv:g=2,rk=12,rv=16,precision=bf16", 1e-3},
                        Case{"xkv:g=4,rk=16,solver=randomized", 1e-3}, Case{"minicache", 1e-4},
                        Case{"kivi:bits=2", 1e-4}, Case{"streamingllm:keep=0.5", 1e-4}, Case{"h2o:keep=0.5", 1e-4},
                        Case{"snapkv:keep=0.5,window=8", 1e-4}, Case{"pyramidkv:keep=0.5,window=8", 1e-4},
                        // kivi quantizes xkv's factors, so this needs both backends' factors with
                        // the same signs (SubspaceFactors::canonicalize_signs; without it an H200
                        // run differed by 0.54 in KL).
                        Case{"snapkv:keep=0.5,window=8+xkv:g=2,rk=12+kivi:bits=4", 1e-3}}) {
    SCOPED_TRACE(c.spec);
    const Score cpu = run(cache, c.spec, linalg::cpu_backend());
    const Score gpu = run(cache, c.spec, linalg::cuda_backend());
    ASSERT_EQ(cpu.layers.size(), gpu.layers.size());
    EXPECT_EQ(cpu.bytes, gpu.bytes);
    double worst = 0;
    const auto compare = [&](const char* what, int layer, double on_cpu, double on_gpu) {
      const double d = std::abs(on_cpu - on_gpu);
      worst = std::max(worst, d);
      EXPECT_LT(d, c.tol) << what << " (layer " << layer << "): cpu " << on_cpu << ", cuda " << on_gpu;
    };
    for (std::size_t l = 0; l < cpu.layers.size(); ++l) {
      compare("key error", int(l), cpu.layers[l].key_error, gpu.layers[l].key_error);
      compare("value error", int(l), cpu.layers[l].value_error, gpu.layers[l].value_error);
    }
    compare("attention-output error", -1, cpu.attn_output_error, gpu.attn_output_error);
    compare("attention KL", -1, cpu.attn_kl, gpu.attn_kl);
    std::printf("%-45s worst difference %.1e (tol %.0e)\n", c.spec, worst, c.tol);
  }
}

}  // namespace
}  // namespace kvlab::compressors
