// Chains compose stages as documented: eviction's mask survives a transform, the bytes are the
// sum of what every stage stores (checked by formula), a quantizer with no transform works on
// the dense cache, a sweep equals its variants run one by one, and what a quantizer stores after
// a low-rank stage does not depend on the signs an eigensolver picked.
#include "compressors/chain.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <numeric>

#include "compressors/dense.h"
#include "compressors/methods/kivi.h"
#include "compressors/score.h"
#include "core/dtype.h"
#include "core/error.h"
#include "compressors/test_caches.h"

namespace kvlab::compressors {
namespace {

CacheShape shape() { return {2, 2, 4, 8, 40, 6, 0}; }  // L, H_kv, H_q, D (N = 16), T, W

std::unique_ptr<Compressed> run(const CacheSource& cache, const std::string& spec) {
  const CompressContext ctx{cache, linalg::cpu_backend(), nullptr};
  return compress_chain(ctx, parse_spec(spec));
}

std::int64_t kept_cells(const Compressed& c, const CacheShape& s) {
  std::int64_t n = 0;
  for (int l = 0; l < s.layers; ++l) {
    const auto kv = c.reconstruct(l);
    n += kv.kept.empty() ? s.tokens * s.kv_heads : std::accumulate(kv.kept.begin(), kv.kept.end(), std::int64_t{0});
  }
  return n;
}

// The registry owns a method: each entry has the factory of its kind and no other, builds its
// stage from its defaults, and says what it needs; the chain's dispatch reads these flags.
TEST(Registry, StagesOfAChainAreFoundByKind) {
  const auto chain = parse_spec("snapkv+xkv:g=2+kivi");
  const auto s = stages_of(chain);
  EXPECT_EQ(s.eviction, &chain.stages[0]);
  EXPECT_EQ(s.transform, &chain.stages[1]);
  EXPECT_EQ(s.quantizer, &chain.stages[2]);
  EXPECT_FALSE(s.repeats);
  const auto bare = stages_of(parse_spec("kivi"));
  EXPECT_TRUE(!bare.eviction && !bare.transform && bare.quantizer && !bare.repeats);
  EXPECT_TRUE(stages_of(parse_spec("kivi+kivi:bits=4")).repeats);
}

TEST(Registry, EveryEntryHasTheFactoryOfItsKindOnly) {
  for (const auto& m : methods()) {
    SCOPED_TRACE(m.name);
    EXPECT_EQ(static_cast<bool>(m.make_eviction), m.kind == StageKind::eviction);
    EXPECT_EQ(static_cast<bool>(m.make_transform), m.kind == StageKind::transform);
    EXPECT_EQ(static_cast<bool>(m.make_quantizer), m.kind == StageKind::quantizer);
    EXPECT_TRUE(!m.sweep || m.kind == StageKind::transform);
    EXPECT_TRUE(!m.stores_cells || m.kind == StageKind::transform);
    // A device path is one of the stage's own kind: eviction is scored there, quantizers pack there.
    const auto kind_of_path = [](DevicePath d) {
      return d == DevicePath::scores ? StageKind::eviction : d == DevicePath::kivi ? StageKind::quantizer : StageKind::transform;
    };
    EXPECT_TRUE(m.device == DevicePath::none || kind_of_path(m.device) == m.kind);
    EXPECT_EQ(m.device == DevicePath::cells, m.stores_cells);
    const auto spec = parse_spec(m.name).stages.at(0);
    switch (m.kind) {
      case StageKind::eviction: EXPECT_NE(make_eviction(spec), nullptr); break;
      case StageKind::transform: EXPECT_NE(make_transform(spec), nullptr); break;
      case StageKind::quantizer: EXPECT_NE(make_quantizer(spec), nullptr); break;
    }
    // Asking a method for a stage of another kind names both.
    if (m.kind != StageKind::quantizer) {
      EXPECT_THROW(make_quantizer(spec), Error);
    }
    if (m.kind != StageKind::eviction) {
      EXPECT_THROW(make_eviction(spec), Error);
    }
  }
  // What the callers rely on (eval captures attn_in for these; compress asks for --model).
  EXPECT_TRUE(method("commonkv").needs.attention_inputs && method("commonkv").needs.checkpoint);
  EXPECT_FALSE(method("xkv").needs.attention_inputs || method("snapkv").needs.checkpoint);
  EXPECT_TRUE(layer_local(parse_spec("snapkv+kivi")) && layer_local(parse_spec("full")));
  EXPECT_FALSE(layer_local(parse_spec("snapkv+svd")) || layer_local(parse_spec("minicache")));
}

// Stored forms are real: after a chain, every tensor holds its packed bytes, the chain's byte
// count is their sum, and the values reconstruction reads are the decoding of those bytes —
// fp16 bit patterns, int32 indices, KIVI codes (decoded by kivi_unpack, checked bit-exact in
// kivi_test.cpp; here the quantized values must at least be grid points of the packed groups).
TEST(Chain, EveryStoredTensorIsPackedAndItsValuesAreItsDecoding) {
  const auto cache = testing::random_cache(shape(), 9);
  for (const char* spec : {"full", "snapkv:keep=0.5,window=4", "xkv:g=2,rk=6,rv=8", "minicache:start=0",
                           "streamingllm:keep=0.5+svd:rk=6,rv=8", "h2o:keep=0.5+kivi:bits=4,residual=0", "svd:rk=6,rv=8+kivi:bits=2,residual=8"}) {
    SCOPED_TRACE(spec);
    auto c = run(cache, spec);
    std::int64_t sum = 0;
    for (const auto* t : c->stored()) {
      SCOPED_TRACE(t->name);
      ASSERT_TRUE(t->is_packed());
      sum += static_cast<std::int64_t>(t->packed.size());
      if (t->format == "fp16") {
        std::vector<std::uint16_t> bits(t->values.size());
        ASSERT_EQ(t->packed.size(), 2 * bits.size());
        std::memcpy(bits.data(), t->packed.data(), t->packed.size());
        std::vector<float> decoded(bits.size());
        core::bits16_to_f32(core::DType::f16, bits, decoded);
        EXPECT_EQ(t->values, decoded);
      } else if (t->format == "int32") {
        EXPECT_TRUE(t->values.empty());
        const auto index = t->unpack_indices();
        EXPECT_EQ(static_cast<std::int64_t>(index.size()), t->shape.at(0));
        EXPECT_TRUE(std::is_sorted(index.begin(), index.end()));
      } else {
        EXPECT_THAT(t->format, ::testing::StartsWith("kivi"));
        EXPECT_LT(t->packed.size(), 2 * t->values.size());  // smaller than the fp16 it replaced
      }
    }
    EXPECT_EQ(c->bytes(), sum);
  }
}

TEST(Chain, QuantizedFactorsDoNotDependOnTheEigensolversSigns) {
  const auto cache = testing::random_cache(shape(), 7);
  testing::SignFlippingBackend flipping;
  for (const char* spec : {"xkv:g=2,rk=6,rv=8+kivi:bits=2", "xkv:g=2,rk=6,solver=randomized+kivi:bits=2",
                           "snapkv:keep=0.5,window=4+svd:rk=6,rv=8+kivi:bits=4"}) {
    SCOPED_TRACE(spec);
    auto a = compress_chain({cache, linalg::cpu_backend(), nullptr}, parse_spec(spec));
    auto b = compress_chain({cache, flipping, nullptr}, parse_spec(spec));
    const auto sa = a->stored(), sb = b->stored();
    ASSERT_EQ(sa.size(), sb.size());
    for (std::size_t i = 0; i < sa.size(); ++i) {
      EXPECT_EQ(sa[i]->name, sb[i]->name);
      EXPECT_EQ(sa[i]->values, sb[i]->values) << sa[i]->name;  // bit for bit: negation is exact
    }
  }
}

TEST(Chain, EvictionAloneStoresTheKeptCellsAndTheirIndices) {
  const auto cache = testing::random_cache(shape(), 1);
  const auto& s = cache.shape();
  auto c = run(cache, "streamingllm:keep=0.5,sinks=4");
  const auto cells = kept_cells(*c, s);
  EXPECT_EQ(cells, s.layers * s.kv_heads * (s.tokens / 2));
  EXPECT_EQ(c->bytes(), cells * (s.head_dim * 2 /*K and V*/ * 2 /*fp16*/ + 4 /*int32 index*/));
  const auto sc = score(cache, *c, linalg::cpu_backend());
  // Kept cells are exact but for the fp16 store: each value within 2⁻¹¹ relative (≈ 4.9e-4).
  EXPECT_LT(sc.key_error, 4.9e-4);
  EXPECT_LT(sc.value_error, 4.9e-4);
  EXPECT_GT(sc.value_error, 0.0);  // the rounding is simulated, not skipped
  EXPECT_GT(sc.attn_kl, 0.0);
}

TEST(Chain, TransformAfterEvictionKeepsTheMaskAndAddsItsOwnBytes) {
  const auto cache = testing::random_cache(shape(), 2);
  const auto& s = cache.shape();
  auto evicted = run(cache, "streamingllm:keep=0.5,sinks=4");
  auto chained = run(cache, "streamingllm:keep=0.5,sinks=4+svd:rk=16,rv=16");  // full rank of N = 16 columns
  for (int l = 0; l < s.layers; ++l) EXPECT_EQ(chained->reconstruct(l).kept, evicted->reconstruct(l).kept) << l;
  // streamingllm keeps the same 20 tokens everywhere: svd factors A [20, 16] and B [16, 16] per layer and part.
  const std::int64_t rows = s.tokens / 2, index_bytes = kept_cells(*chained, s) * 4;
  EXPECT_EQ(chained->bytes(), index_bytes + s.layers * 2 * (rows * 16 + 16 * s.width()) * 2);
  const auto sc = score(cache, *chained, linalg::cpu_backend());
  // Full rank on the kept tokens is lossless but for the fp16 factors (two roundings per product).
  EXPECT_LT(sc.key_error, 2e-3);
  EXPECT_LT(sc.value_error, 2e-3);
}

TEST(Chain, QuantizerWithoutTransformQuantizesTheDenseCache) {
  const auto cache = testing::random_cache(shape(), 3);
  auto a = run(cache, "kivi:bits=8,group=8,residual=8");
  auto b = run(cache, "full+kivi:bits=8,group=8,residual=8");
  auto full = run(cache, "full");
  EXPECT_EQ(a->bytes(), b->bytes());
  EXPECT_LT(a->bytes(), full->bytes());
  EXPECT_EQ(a->reconstruct(1).value.data, b->reconstruct(1).value.data);
  const auto sc = score(cache, *a, linalg::cpu_backend());
  EXPECT_GT(sc.value_error, 0.0);
  EXPECT_LT(sc.value_error, 0.02);  // 8 bits: well under a percent of the range per element
}

TEST(Chain, EvictionThenQuantizationStoresLessThanEvictionAlone) {
  const auto cache = testing::random_cache(shape(), 4);
  auto evicted = run(cache, "snapkv:keep=0.5,window=4");
  auto quantized = run(cache, "snapkv:keep=0.5,window=4+kivi:bits=4,group=8,residual=8");
  EXPECT_LT(quantized->bytes(), evicted->bytes());
  for (int l = 0; l < 2; ++l) EXPECT_EQ(quantized->reconstruct(l).kept, evicted->reconstruct(l).kept);
}

TEST(Chain, SweepEqualsItsVariantsOneByOne) {
  const auto cache = testing::random_cache(shape(), 5);
  const CompressContext ctx{cache, linalg::cpu_backend(), nullptr};
  const auto variants = expand_sweep("xkv:g=2,rk=[4,8,12]");
  ASSERT_EQ(variants.size(), 3u);
  auto swept = compress_sweep(ctx, variants);
  ASSERT_EQ(swept.size(), 3u);
  for (std::size_t i = 0; i < 3; ++i) {
    auto alone = compress_chain(ctx, variants[i]);
    EXPECT_EQ(swept[i]->bytes(), alone->bytes()) << i;
    const auto a = score(cache, *swept[i], linalg::cpu_backend()), b = score(cache, *alone, linalg::cpu_backend());
    EXPECT_NEAR(a.key_error, b.key_error, 1e-4) << i;
    EXPECT_NEAR(a.value_error, b.value_error, 1e-4) << i;
  }
}

// Chains of eviction, full and quantizers compress each layer on their own, so compressing and
// scoring one layer at a time must give exactly the whole-cache figures: every per-layer figure,
// the pooled overall ones, the bytes and the notes (the oracle is the whole-cache path, which
// holds every layer). PyramidKV's budgets depend on the layer index, H2O scores accumulate.
TEST(Chain, LayerLocalChainsScoreTheSameOneLayerAtATime) {
  const auto cache = testing::synthetic_cache(testing::small_synth_config());
  const CompressContext ctx{cache, linalg::cpu_backend(), nullptr};
  for (const char* spec : {"full", "kivi:bits=2,group=32,residual=128", "kivi:bits=4,group=16,residual=0",
                           "streamingllm:keep=0.25,sinks=4", "h2o:keep=0.3", "snapkv:keep=0.25,window=8",
                           "pyramidkv:keep=0.25,window=8", "snapkv:keep=0.5,window=8+kivi:bits=4",
                           "streamingllm:keep=0.5+full"}) {
    const auto chain = parse_spec(spec);
    ASSERT_TRUE(layer_local(chain)) << spec;
    auto whole = compress_chain(ctx, chain);
    const auto expected = score(cache, *whole, linalg::cpu_backend());
    int calls = 0;
    double compress_seconds = -1;
    nlohmann::json notes;
    const auto got = compress_and_score_by_layer(ctx, chain, [&](int, int) { ++calls; }, &compress_seconds, &notes);
    EXPECT_EQ(notes, whole->notes()) << spec;
    EXPECT_EQ(calls, cache.shape().layers);
    EXPECT_GE(compress_seconds, 0.0);
    EXPECT_EQ(got.bytes, expected.bytes) << spec;
    EXPECT_EQ(got.dense_bytes, expected.dense_bytes);
    EXPECT_EQ(got.key_error, expected.key_error) << spec;
    EXPECT_EQ(got.value_error, expected.value_error) << spec;
    EXPECT_EQ(got.attn_output_error, expected.attn_output_error) << spec;
    EXPECT_EQ(got.attn_kl, expected.attn_kl) << spec;
    EXPECT_EQ(got.kept_fraction, expected.kept_fraction);
    ASSERT_EQ(got.layers.size(), expected.layers.size());
    for (std::size_t l = 0; l < got.layers.size(); ++l) {
      EXPECT_EQ(got.layers[l].key_error, expected.layers[l].key_error) << spec << " layer " << l;
      EXPECT_EQ(got.layers[l].attn_kl, expected.layers[l].attn_kl) << spec << " layer " << l;
    }
  }
  for (const char* spec : {"svd:rk=4", "xkv:g=2,rk=4", "minicache", "snapkv:keep=0.5,window=8+svd:rk=4"})
    EXPECT_FALSE(layer_local(parse_spec(spec))) << spec;
  EXPECT_THAT(testing::error_of([&] { compress_and_score_by_layer(ctx, parse_spec("svd:rk=4")); }),
              ::testing::HasSubstr("not a per-layer chain"));
}

}  // namespace
}  // namespace kvlab::compressors
