// compress_cache's two routes on a tiny model's prefilled cache (CPU, f32): svd/xkv on the
// model's own tensors (CompressRoute::automatic → compressors::compress_low_rank_resident)
// against the host route (each layer to host f32, compress_chain, the rebuild copied back), an
// independent path through the compressors. Compressed layers agree to f32 rounding (1e-6
// normalized), the bytes exactly; what a spec leaves uncompressed the resident route does not
// touch (bit-identical), while the host route stores it at fp16 (≈ 1e-3 away).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <random>

#include <fmt/format.h>

#include "compressors/chain.h"
#include "compressors/compressor.h"
#include "compressors/methods/low_rank.h"
#include "core/error_of.h"
#include "core/safetensors.h"
#include "compressors/methods/minicache.h"
#include "compressors/spec.h"
#include "harness/compression_hook.h"
#include "harness/kv_cache_source.h"
#include "harness/tiny_model.h"
#include "linalg/fan_out.h"
#include "linalg/select_backend.h"

namespace kvlab::harness {
namespace {

namespace fs = std::filesystem;

double normalized_difference(const at::Tensor& got, const at::Tensor& want) {
  const auto g = got.to(at::kDouble), w = want.to(at::kDouble);
  return ((g - w).norm() / w.norm()).item<double>();
}

class CompressionHook : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / fmt::format("kvlab_hook_{}", ::getpid());
    fs::remove_all(dir_);
    TinyModelOptions o;
    o.layers = 4;
    o.layer_similarity = 0.5;
    o.dtype = "float32";
    write_tiny_model(dir_, o);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

// A prefill of `n` pseudo-random tokens (seeded) with the last 8 queries captured, and the
// attention inputs too when asked (commonkv).
struct Prefilled {
  ContextCapture capture;
  Prefill start;
};
Prefilled prefill_tokens(const LlamaModel& model, int n, unsigned seed, bool attn_in = false) {
  std::mt19937 rng(seed);
  std::vector<std::int32_t> context(static_cast<std::size_t>(n));
  for (auto& t : context) t = static_cast<std::int32_t>(rng() % 200 + 10);
  ContextCapture capture(model.config().num_layers, 8, attn_in);
  Prefill start = prefill(model, context, n + 10, capture.observer());
  return {std::move(capture), std::move(start)};  // the observer (bound to `capture`) is done
}

// One spec compressed from the same prefill on the resident route (`resident_route`: automatic
// or forced) and on the host route, and compressed again on the resident one from the exact
// copy after an earlier compression left the cache changed (halved here): that must end as the
// first compression did.
struct BothRoutes {
  KvCache resident, host, again;
  CompressionResult on_resident, on_host, on_again;
};
BothRoutes compress_both_ways(const Prefilled& p, const ModelConfig& config, const compressors::ChainSpec& chain,
                              CompressRoute resident_route = CompressRoute::automatic,
                              linalg::Backend& backend = linalg::cpu_backend(),
                              const core::Checkpoint* checkpoint = nullptr) {
  BothRoutes r{p.start.cache.clone(), p.start.cache.clone(), p.start.cache.clone(), {}, {}, {}};
  r.on_resident = compress_cache(r.resident, p.capture, config, chain, checkpoint, backend, nullptr, resident_route);
  r.on_host = compress_cache(r.host, p.capture, config, chain, checkpoint, backend, nullptr, CompressRoute::host);
  ExactKv exact;
  exact.catch_up(p.start.cache);
  for (int l = 0; l < config.num_layers; ++l) r.again.replace(l, r.again.key(l) * 0.5, r.again.value(l) * 0.5);
  r.on_again = compress_cache(r.again, p.capture, config, chain, checkpoint, backend, &exact, resident_route);
  EXPECT_EQ(r.on_resident.route, "resident");
  EXPECT_EQ(r.on_host.route, "host");
  EXPECT_EQ(r.on_resident.bytes, r.on_host.bytes);
  EXPECT_EQ(r.on_resident.dense_bytes, r.on_host.dense_bytes);
  EXPECT_EQ(r.on_again.bytes, r.on_resident.bytes);
  return r;
}

const at::Tensor& part_of(const KvCache& cache, int layer, bool key) { return key ? cache.key(layer) : cache.value(layer); }

// After a chain that evicts: both routes hold the same cells in every layer, and so does the
// cache compressed again; `compare` gets each layer part's kept cells (the others zeroed) on the
// resident route, the host route and the prefill, and the resident route's again must equal it.
void expect_same_cells(const BothRoutes& r, const Prefilled& p, int layers,
                       const std::function<void(const at::Tensor& got, const at::Tensor& want, const at::Tensor& exact,
                                                int layer)>& compare) {
  for (int l = 0; l < layers; ++l) {
    ASSERT_TRUE(r.resident.keep(l).defined());
    EXPECT_TRUE(at::equal(r.resident.keep(l), r.host.keep(l)));
    EXPECT_TRUE(at::equal(r.again.keep(l), r.resident.keep(l)));
    const auto kept = r.host.keep(l).unsqueeze(-1).to(at::kFloat);
    for (bool key : {true, false}) {
      SCOPED_TRACE(fmt::format("layer {} {}", l, key ? "key" : "value"));
      const auto got = part_of(r.resident, l, key) * kept;
      compare(got, part_of(r.host, l, key) * kept, part_of(p.start.cache, l, key) * kept, l);
      EXPECT_LT(normalized_difference(part_of(r.again, l, key) * kept, got), 1e-6);
    }
  }
}

// How many values differ by more than 1e-4 relative: a value moved across a KIVI code boundary.
std::int64_t moved(const at::Tensor& got, const at::Tensor& want) {
  return ((got - want).abs() > 1e-4 * (want.abs() + 1)).sum().item<std::int64_t>();
}

// Compresses one prefill both ways with each spec and compares layer by layer; `tolerance`
// bounds the normalized difference of what both routes compress.
void expect_routes_agree(const LlamaModel& model, linalg::Backend& backend, double tolerance) {
  // One BLAS thread, so one solve at a time on both routes: the host route otherwise runs two
  // single-threaded solves side by side where the resident route runs one on two threads, and
  // the f32 eigensolver rounds the two ways apart by ~1e-4 (the f32 route's own accuracy), past
  // the same-arithmetic tolerances here.
  const linalg::OneThreadPerCall same_arithmetic(backend, 2);
  const auto& config = model.config();
  ASSERT_EQ(config.num_kv_heads * config.head_dim, 32);  // H·D: a 3-layer group has 96 columns
  const Prefilled p = prefill_tokens(model, 120, 3);
  for (const char* text : {"xkv:g=2,rk=20,rv=30", "svd:rk=12,precision=f32,part=value",
                           "xkv:g=3,rk=10,start=1,precision=tf32", "xkv:groups=0-1,rk=8,precision=bf16,part=key",
                           "xkv:g=2,rk=12,solver=randomized,precision=f32"}) {
    SCOPED_TRACE(text);
    const auto chain = compressors::parse_spec(text);
    const auto r = compress_both_ways(p, config, chain, CompressRoute::automatic, backend);
    const auto groups = compressors::low_rank_groups(chain.stages[0], config.num_layers);
    const auto& part = chain.stages[0].get("part");
    for (int l = 0; l < config.num_layers; ++l) {
      bool grouped = false;
      for (const auto& g : groups) grouped |= std::find(g.begin(), g.end(), l) != g.end();
      for (bool key : {true, false}) {
        SCOPED_TRACE(fmt::format("layer {} {}", l, key ? "key" : "value"));
        const auto& got = part_of(r.resident, l, key);
        const auto& want = part_of(r.host, l, key);
        const auto& exact = part_of(p.start.cache, l, key);
        EXPECT_LT(normalized_difference(part_of(r.again, l, key), got), tolerance);
        if (grouped && (part == "both" || part == (key ? "key" : "value"))) {
          EXPECT_LT(normalized_difference(got, want), tolerance);
          EXPECT_GT(normalized_difference(got, exact), 1e-2);  // ranks well below the columns
          EXPECT_TRUE(r.resident.rotation_stale(l));           // the model re-rotates the new keys
        } else {
          EXPECT_TRUE(at::equal(got, exact));
          EXPECT_LT(normalized_difference(want, exact), 1e-3);  // the host route's fp16 store
        }
      }
    }
  }
}

// On the CPU both routes run the same BLAS on the same Gram: f32 rounding only.
TEST_F(CompressionHook, ResidentRouteRebuildsWhatTheHostRouteDoes) {
  expect_routes_agree(LlamaModel::load(dir_, RunOptions{}), linalg::cpu_backend(), 1e-6);
}

// A bf16 cache, as models run on a GPU: both routes convert to f32 and back, so X̂ agrees to f32
// rounding before the bf16 store; an element whose two f32 values straddle a bf16 rounding
// boundary then differs by one bf16 ulp (2⁻⁸ relative), rarely: 1e-3 normalized.
TEST_F(CompressionHook, ResidentRouteOnABf16CacheRebuildsWhatTheHostRouteDoes) {
  RunOptions options;
  options.dtype = at::kBFloat16;
  expect_routes_agree(LlamaModel::load(dir_, options), linalg::cpu_backend(), 1e-3);
}

// On a GPU the resident route hands the model's CUDA tensors to cuBLAS/cuSOLVER; the host route
// uploads X in chunks, so its Gram is summed in another order and V_r moves by about u·κ: 1e-3
// still catches a wrong layout or a transposed factor (errors of order 1). Skips without one.
TEST_F(CompressionHook, ResidentRouteOnCudaRebuildsWhatTheHostRouteDoes) {
  if (!at::hasCUDA() || !linalg::cuda_backend_built()) GTEST_SKIP() << "no CUDA device or no CUDA backend";
  RunOptions options;
  options.device = at::Device(at::kCUDA);
  expect_routes_agree(LlamaModel::load(dir_, options), linalg::backend_for("cuda"), 1e-3);
}

// Eviction alone on the resident route scores on the model's device and writes only the masks:
// the same cells as the host route (whose scores come from host f32 layers, agreeing to 1e-5,
// far below the gaps between the scores ranked), the same bytes, and the kept cells as the model
// computed them, where the host route stores them at fp16 (≈ 1e-3 away). After decode steps the
// exact copy's tokens are what is scored and written back.
void expect_eviction_routes_agree(const LlamaModel& model) {
  const auto& config = model.config();
  const Prefilled p = prefill_tokens(model, 120, 4);
  for (const char* text : {"snapkv:keep=0.4,window=4,kernel=5", "h2o:keep=0.3,agg=max", "pyramidkv:budget=40,window=4",
                           "streamingllm:keep=0.5", "snapkv:budget=500,window=4", "knorm:keep=0.4",
                           "keydiff:keep=0.4", "tova:keep=0.4", "tova:keep=0.4,last=kept", "random:keep=0.4,seed=3"}) {
    SCOPED_TRACE(text);
    const auto r = compress_both_ways(p, config, compressors::parse_spec(text));
    const bool evicts = std::string(text) != "snapkv:budget=500,window=4";  // budget ≥ T keeps every cell
    for (int l = 0; l < config.num_layers; ++l) {
      SCOPED_TRACE(l);
      ASSERT_EQ(r.resident.keep(l).defined(), evicts);
      ASSERT_EQ(r.host.keep(l).defined(), evicts);
      if (evicts) {
        EXPECT_TRUE(at::equal(r.resident.keep(l), r.host.keep(l)));
        EXPECT_TRUE(at::equal(r.again.keep(l), r.resident.keep(l)));
        EXPECT_LT(r.resident.keep(l).sum().item<std::int64_t>(), r.resident.keep(l).numel());
      }
      for (bool key : {true, false}) {
        EXPECT_TRUE(at::equal(part_of(r.resident, l, key), part_of(p.start.cache, l, key)));
        EXPECT_TRUE(at::equal(part_of(r.again, l, key), part_of(p.start.cache, l, key)));
      }
      const auto kept = r.host.keep(l).defined() ? r.host.keep(l).unsqueeze(-1).to(at::kFloat) : at::ones({1}, at::kFloat);
      EXPECT_LT(normalized_difference(r.host.value(l) * kept, p.start.cache.value(l) * kept), 1e-3);
    }
  }
}

TEST_F(CompressionHook, EvictionOnTheResidentRouteKeepsWhatTheHostRouteKeeps) {
  expect_eviction_routes_agree(LlamaModel::load(dir_, RunOptions{}));
}

// An eviction per query head (snapkv granularity=query_head) goes the host way (the resident
// eviction route selects per KV head) and leaves in the cache one keep row per query head: the
// stage's own per-query-head selection on the same cache, and the bytes of its H_q heads stored.
TEST_F(CompressionHook, PerQueryHeadEvictionKeepsEachQueryHeadsSelection) {
  const auto model = LlamaModel::load(dir_, RunOptions{});
  const auto& config = model.config();
  ASSERT_GT(config.n_rep(), 1);
  const Prefilled p = prefill_tokens(model, 120, 5);
  const auto chain = compressors::parse_spec("snapkv:budget=30,window=8,granularity=query_head");
  KvCache cache = p.start.cache.clone();
  const auto result = compress_cache(cache, p.capture, config, chain, nullptr, linalg::cpu_backend(), nullptr,
                                     CompressRoute::automatic);
  EXPECT_EQ(result.route, "host");
  const KvCacheSource source(p.start.cache, nullptr, p.capture, config);
  const compressors::CompressContext ctx{source, linalg::cpu_backend(), nullptr};
  EXPECT_EQ(result.bytes, compressors::compress_chain(ctx, chain)->bytes());
  const auto stage = compressors::make_eviction(chain.stages[0]);
  int differ = 0;  // layers where a group's two heads keep different tokens
  for (int l = 0; l < config.num_layers; ++l) {
    SCOPED_TRACE(fmt::format("layer {}", l));
    const auto selected = stage->select_query_heads(ctx, l);  // [T, H_q]
    const auto want = at::from_blob(const_cast<std::uint8_t*>(selected.data()), {120, config.num_heads}, at::kByte).t().to(at::kBool);
    ASSERT_TRUE(cache.keep(l).defined());
    EXPECT_TRUE(at::equal(cache.keep(l), want));
    differ += !at::equal(want.narrow(0, 0, 1), want.narrow(0, 1, 1));
  }
  EXPECT_GT(differ, 0) << "per query head and per KV head would not be told apart";
}

// Eviction followed by KIVI on the resident route (auto takes it on the CPU too): the
// cells the host route keeps, each head's kept rows quantized where they lie as the chain stores
// them ([n, D] per head, keys post-RoPE), the same bytes; kept values agree but for the rare one
// an ulp moves across a code boundary (counted).
TEST_F(CompressionHook, EvictionThenKiviOnTheResidentRouteRebuildsWhatTheHostRouteDoes) {
  const LlamaModel model = LlamaModel::load(dir_, RunOptions{});
  const auto& config = model.config();
  const Prefilled p = prefill_tokens(model, 120, 29);
  for (const char* text : {"snapkv:keep=0.5,window=4+kivi:bits=4,group=8,residual=8", "streamingllm:keep=0.3+full+kivi:bits=2,residual=0"}) {
    SCOPED_TRACE(text);
    const auto r = compress_both_ways(p, config, compressors::parse_spec(text));
    expect_same_cells(r, p, config.num_layers, [](const at::Tensor& got, const at::Tensor& want, const at::Tensor& exact, int) {
      EXPECT_LE(moved(got, want), got.numel() / 200);
      EXPECT_GT(normalized_difference(got, exact), 1e-3);  // quantized
    });
  }
}

// Eviction then svd/xkv (and kivi) on the resident route: the masks scored on the device, the
// low-rank stage on the kept rows with dropped cells zero, as compress_chain's CompactCache. The
// host route's masks and bytes, kept cells within f32 rounding (with kivi: but for the rare value
// moved across a code boundary, counted); too few kept rows for the Gram route go the host way.
TEST_F(CompressionHook, EvictionThenLowRankOnTheResidentRouteRebuildsWhatTheHostRouteDoes) {
  // One BLAS thread, so one solve at a time on both routes: the host route otherwise runs two
  // single-threaded solves side by side where the resident route runs one on two threads, and
  // the f32 eigensolver rounds the two ways apart by ~1e-4 (the f32 route's own accuracy), past
  // the same-arithmetic tolerances here.
  const linalg::OneThreadPerCall same_arithmetic(linalg::cpu_backend(), 2);
  const LlamaModel model = LlamaModel::load(dir_, RunOptions{});
  const auto& config = model.config();
  const Prefilled p = prefill_tokens(model, 120, 31);
  for (const char* text : {"snapkv:keep=0.6,window=4+xkv:g=2,rk=8", "streamingllm:keep=0.6+xkv:g=2,rk=8,start=1,precision=f32",
                           "h2o:keep=0.7+svd:rk=6,solver=randomized+kivi:bits=4"}) {
    SCOPED_TRACE(text);
    const std::string spec = text;
    const auto r = compress_both_ways(p, config, compressors::parse_spec(text));
    expect_same_cells(r, p, config.num_layers, [&](const at::Tensor& got, const at::Tensor& want, const at::Tensor&, int l) {
      if (spec.find("kivi") != std::string::npos)
        EXPECT_LE(moved(got, want), got.numel() / 200);
      else  // layer 0, uncompressed with start=1, the host route stores at fp16
        EXPECT_LT(normalized_difference(got, want), l == 0 && spec.find("start=1") != std::string::npos ? 1e-3 : 1e-5);
    });
  }
  const auto few = compressors::parse_spec("snapkv:budget=5,window=4+xkv:g=2,rk=4");  // ≤ 40 kept rows < 2·32 columns
  KvCache cache = p.start.cache.clone();
  EXPECT_EQ(compress_cache(cache, p.capture, config, few, nullptr, linalg::cpu_backend()).route, "host");
}

// KIVI on the dense cache on the resident route (forced: auto takes it on a GPU only): torch
// quantizes each layer where it lies (kivi_on_device.h, checked element by element against the host stage in its own test); here
// the whole hook, against the host route, on a model whose keys carry RoPE: the same bytes and
// the same rebuild but for the rare value an ulp of rotation moves across a code boundary.
TEST_F(CompressionHook, KiviOnTheResidentRouteRebuildsWhatTheHostRouteDoes) {
  const LlamaModel model = LlamaModel::load(dir_, RunOptions{});
  const auto& config = model.config();
  const Prefilled p = prefill_tokens(model, 150, 7);
  for (const char* text : {"kivi:bits=2,group=32,residual=64", "full+kivi:bits=4,group=5,residual=0"}) {
    SCOPED_TRACE(text);
    const auto chain = compressors::parse_spec(text);
    const auto r = compress_both_ways(p, config, chain, CompressRoute::resident);
    EXPECT_GT(r.on_resident.ratio(), 1.4);  // small heads: the fp16 scales and mins weigh
    KvCache automatic = p.start.cache.clone();  // on a CPU model, auto takes the host stage (faster there)
    EXPECT_EQ(compress_cache(automatic, p.capture, config, chain, nullptr, linalg::cpu_backend()).route, "host");
    for (int l = 0; l < config.num_layers; ++l)
      for (bool key : {true, false}) {
        SCOPED_TRACE(fmt::format("layer {} {}", l, key ? "key" : "value"));
        const auto& got = part_of(r.resident, l, key);
        EXPECT_LE(moved(got, part_of(r.host, l, key)), got.numel() / 200);
        EXPECT_GT(normalized_difference(got, part_of(p.start.cache, l, key)), 1e-3);  // quantized
        EXPECT_FALSE(r.resident.keep(l).defined());
        EXPECT_TRUE(at::equal(part_of(r.again, l, key), got));
      }
  }
}

// MiniCache alone on the resident route (forced: auto takes it on a GPU only): torch merges each
// pair where the cache lies (minicache_on_device.h, checked row by row against the host stage in its own test); here the
// whole hook against the host route: the same bytes, merged pairs within the f32 rounding of
// e·‖x‖ or of an fp16 value (1e-5 normalized), layers outside the pairs untouched, and
// compressing again from the exact copy gives the same cache.
TEST_F(CompressionHook, MinicacheOnTheResidentRouteRebuildsWhatTheHostRouteDoes) {
  const LlamaModel model = LlamaModel::load(dir_, RunOptions{});
  const auto& config = model.config();
  const Prefilled p = prefill_tokens(model, 100, 11);
  for (const char* text : {"minicache", "minicache:start=0,gamma=0.2,scope=head,part=value", "minicache:start=1,end=2,part=key"}) {
    SCOPED_TRACE(text);
    const auto chain = compressors::parse_spec(text);
    const auto r = compress_both_ways(p, config, chain, CompressRoute::resident);
    KvCache automatic = p.start.cache.clone();  // on a CPU model, auto takes the host stage (faster there)
    EXPECT_EQ(compress_cache(automatic, p.capture, config, chain, nullptr, linalg::cpu_backend()).route, "host");
    const auto& spec = chain.stages[0];
    const auto pairs = compressors::minicache_pairs(spec.get_int("start"), spec.get_int("end"), config.num_layers, "test");
    int merged_parts = 0;
    for (int l = 0; l < config.num_layers; ++l)
      for (bool key : {true, false}) {
        SCOPED_TRACE(fmt::format("layer {} {}", l, key ? "key" : "value"));
        const auto& got = part_of(r.resident, l, key);
        const auto& exact = part_of(p.start.cache, l, key);
        EXPECT_TRUE(at::equal(part_of(r.again, l, key), got));
        bool in_pair = false;
        for (int a : pairs) in_pair |= l == a || l == a + 1;
        const auto& part = spec.get("part");
        if (in_pair && (part == "both" || part == (key ? "key" : "value"))) {
          ++merged_parts;
          EXPECT_LT(normalized_difference(got, part_of(r.host, l, key)), 1e-5);
          EXPECT_GT(normalized_difference(got, exact), 1e-3);  // merged rows lost their own direction
        } else {
          EXPECT_TRUE(at::equal(got, exact));
        }
      }
    EXPECT_GT(merged_parts, 0);
  }
}

// CommonKV, alone or followed by KIVI, on the resident route (forced: auto takes it on a GPU
// only): torch forms the latents, cosines, merged latents and rebuilds where the cache lies, from
// the same weight SVD and no-merge budget as the chain. Against the host route: the same bytes,
// grouped layers within f32 rounding (1e-5 normalized; a token whose cosine ties another's across
// the budget's edge would show as an error of order one), the leftover layer the model's own
// (leftover=svd: a shortened group, like the grouped ones); with KIVI every layer quantized but for
// the rare value moved across a code boundary (counted).
TEST_F(CompressionHook, CommonkvOnTheResidentRouteRebuildsWhatTheHostRouteDoes) {
  const LlamaModel model = LlamaModel::load(dir_, RunOptions{});
  const core::Checkpoint checkpoint(dir_);
  const auto& config = model.config();
  const Prefilled p = prefill_tokens(model, 90, 19, /*attn_in=*/true);
  for (const char* text : {"commonkv:g=3,rank=20,keep=0.4,sinks=2,recent=8", "commonkv:g=2,keep=0.2,sinks=0,recent=0",
                           "commonkv:g=3,rank=20,keep=0.4+kivi:bits=4,group=8,residual=8",
                           "commonkv:g=3,rank=20,keep=0.4,sinks=2,recent=8,leftover=svd",
                           "commonkv:g=3,rank=20,keep=0.4,leftover=svd+kivi:bits=4,group=8,residual=8"}) {
    SCOPED_TRACE(text);
    const bool kivi = std::string(text).find("kivi") != std::string::npos;
    const auto chain = compressors::parse_spec(text);
    ASSERT_NE(config.num_layers % 3, 0);  // a leftover layer
    const auto r = compress_both_ways(p, config, chain, CompressRoute::resident, linalg::cpu_backend(), &checkpoint);
    KvCache automatic = p.start.cache.clone();  // on a CPU model, auto takes the host stage
    EXPECT_EQ(compress_cache(automatic, p.capture, config, chain, &checkpoint, linalg::cpu_backend()).route, "host");
    const int grouped = chain.stages[0].get("leftover") == "svd"
                            ? config.num_layers
                            : config.num_layers / static_cast<int>(chain.stages[0].get_int("g")) *
                                  static_cast<int>(chain.stages[0].get_int("g"));
    for (int l = 0; l < config.num_layers; ++l)
      for (bool key : {true, false}) {
        SCOPED_TRACE(fmt::format("layer {} {}", l, key ? "key" : "value"));
        const auto& got = part_of(r.resident, l, key);
        EXPECT_TRUE(at::equal(part_of(r.again, l, key), got));
        if (kivi) {  // every layer quantized, the leftover one as the chain stores it dense
          EXPECT_LE(moved(got, part_of(r.host, l, key)), got.numel() / 200);
          EXPECT_GT(normalized_difference(got, part_of(p.start.cache, l, key)), 1e-3);
        } else if (l < grouped) {
          EXPECT_LT(normalized_difference(got, part_of(r.host, l, key)), 1e-5);
          EXPECT_GT(normalized_difference(got, part_of(p.start.cache, l, key)), 1e-3);  // latents merged or truncated
        } else {
          EXPECT_TRUE(at::equal(got, part_of(p.start.cache, l, key)));
        }
      }
  }
  const Prefilled plain = prefill_tokens(model, 90, 19);  // no attention inputs captured
  KvCache cache = plain.start.cache.clone();
  EXPECT_THAT(core::error_of([&] {
                compress_cache(cache, plain.capture, config, compressors::parse_spec("commonkv:g=2"), &checkpoint,
                               linalg::cpu_backend(), nullptr, CompressRoute::resident);
              }),
              ::testing::HasSubstr("attn_in"));
}

// svd/xkv followed by KIVI on the resident route: KIVI quantizes A and each B_l where they lie,
// and the layers the spec leaves uncompressed as the chain stores them (post-RoPE keys, whole
// [T, H·D] rows). Against the host route: the same bytes, and the same rebuild but for the rare
// value that the f32 rounding of A moves across a code boundary (counted).
TEST_F(CompressionHook, LowRankThenKiviOnTheResidentRouteRebuildsWhatTheHostRouteDoes) {
  const LlamaModel model = LlamaModel::load(dir_, RunOptions{});
  const auto& config = model.config();
  const Prefilled p = prefill_tokens(model, 120, 13);
  for (const char* text : {"xkv:g=2,rk=12+kivi:bits=4", "xkv:g=2,rk=8,start=2,precision=f32+kivi:bits=2,group=5,residual=16"}) {
    SCOPED_TRACE(text);
    const auto r = compress_both_ways(p, config, compressors::parse_spec(text));
    for (int l = 0; l < config.num_layers; ++l)
      for (bool key : {true, false}) {
        SCOPED_TRACE(fmt::format("layer {} {}", l, key ? "key" : "value"));
        const auto& got = part_of(r.resident, l, key);
        const auto& want = part_of(r.host, l, key);
        EXPECT_LE(moved(got, want), got.numel() / 200);
        EXPECT_LT(normalized_difference(got, want), 1e-2);
        EXPECT_GT(normalized_difference(got, part_of(p.start.cache, l, key)), 1e-3);  // every layer changed
        EXPECT_LT(normalized_difference(part_of(r.again, l, key), got), 1e-6);
      }
  }
}

// Every resident route on a CUDA model (auto takes them all there) against the host route: the
// same bytes and the same cache to 1e-3 normalized (cuBLAS sums in other orders; a rare value
// moved across a KIVI code or an eviction rank shows far below that), and keep masks that agree
// on 99 % of the cells. Skips without a device.
TEST_F(CompressionHook, EveryResidentRouteOnCudaMatchesTheHostRoute) {
  if (!at::hasCUDA() || !linalg::cuda_backend_built()) GTEST_SKIP() << "no CUDA device or no CUDA backend";
  RunOptions options;
  options.device = at::Device(at::kCUDA);
  const LlamaModel model = LlamaModel::load(dir_, options);
  const core::Checkpoint checkpoint(dir_);
  const auto& config = model.config();
  const Prefilled p = prefill_tokens(model, 120, 23, /*attn_in=*/true);
  auto& backend = linalg::backend_for("cuda");
  for (const char* text : {"snapkv:keep=0.4,window=4", "kivi:bits=4", "minicache:start=0", "commonkv:g=2,keep=0.5",
                           "xkv:g=2,rk=12+kivi:bits=4", "h2o:keep=0.5+kivi:bits=4,residual=16",
                           "snapkv:keep=0.6,window=4+xkv:g=2,rk=8+kivi:bits=4", "commonkv:g=3,keep=0.5+kivi:bits=4"}) {
    SCOPED_TRACE(text);
    const auto r = compress_both_ways(p, config, compressors::parse_spec(text), CompressRoute::automatic, backend,
                                      &checkpoint);
    for (int l = 0; l < config.num_layers; ++l) {
      if (r.resident.keep(l).defined()) {
        ASSERT_TRUE(r.host.keep(l).defined());
        EXPECT_GE(r.resident.keep(l).eq(r.host.keep(l)).to(at::kFloat).mean().item<double>(), 0.99);
      }
      for (bool key : {true, false}) {
        const auto mask =
            r.host.keep(l).defined() ? r.host.keep(l).unsqueeze(-1).to(at::kFloat) : at::ones({1}, at::kFloat).cuda();
        EXPECT_LT(normalized_difference(part_of(r.resident, l, key) * mask, part_of(r.host, l, key) * mask), 1e-3);
      }
    }
  }
}

// Caches shorter than a group's columns take the token Gram on the host route, which the resident
// route does not replay: automatic then goes the host way, and both give the same cache.
TEST_F(CompressionHook, ShortCachesGoTheHostWay) {
  const LlamaModel model = LlamaModel::load(dir_, RunOptions{});
  const auto& config = model.config();
  const Prefilled p = prefill_tokens(model, 40, 17);  // 40 tokens < 2·32 columns
  const auto chain = compressors::parse_spec("xkv:g=2,rk=8");
  KvCache a = p.start.cache.clone(), b = p.start.cache.clone();
  EXPECT_EQ(compress_cache(a, p.capture, config, chain, nullptr, linalg::cpu_backend()).route, "host");
  compress_cache(b, p.capture, config, chain, nullptr, linalg::cpu_backend(), nullptr, CompressRoute::host);
  for (int l = 0; l < config.num_layers; ++l) {
    EXPECT_TRUE(at::equal(a.key(l), b.key(l)));
    EXPECT_TRUE(at::equal(a.value(l), b.value(l)));
  }
}

// A Gemma cache longer than its sliding window (16 keys; Gemma-3's sliding layers with their own
// RoPE) compresses (kvlab before issue 22 refused it): the host route scores with the compressors'
// masked attention (compressors/attention.cpp), the resident route with torch's
// (window_scores.cpp); both must keep the same cells. The cache source the hook builds gives each
// layer the config's window and RoPE; Gemma-2 at 12 tokens (within the window) keeps what the
// same config without a window keeps.
TEST(CompressionHookGemma, SlidingLayersCompressOnBothRoutes) {
  const auto dir = fs::temp_directory_path() / fmt::format("kvlab_hook_gemma_{}", ::getpid());
  const auto chain = compressors::parse_spec("snapkv:budget=5,window=4");
  for (const std::string arch : {"gemma2", "gemma3"}) {
    fs::remove_all(dir);
    TinyModelOptions o;
    o.arch = arch;
    o.layers = 2;
    o.dtype = "float32";
    o.max_position_embeddings = 1024;  // window 16
    write_tiny_model(dir, o);
    const auto model = LlamaModel::load(dir, {});
    ASSERT_EQ(model.config().sliding_window, 16);
    for (const int n : {12, 20}) {
      auto p = prefill_tokens(model, n, 3);
      KvCache host = p.start.cache.clone(), resident = p.start.cache.clone();
      EXPECT_EQ(compress_cache(host, p.capture, model.config(), chain, nullptr, linalg::cpu_backend(), nullptr,
                               CompressRoute::host).route, "host");
      EXPECT_EQ(compress_cache(resident, p.capture, model.config(), chain, nullptr, linalg::cpu_backend(), nullptr,
                               CompressRoute::resident).route, "resident");
      const KvCacheSource source(p.start.cache, nullptr, p.capture, model.config());
      ModelConfig no_window = model.config();
      no_window.sliding_window.reset();
      KvCache unmasked = p.start.cache.clone();
      compress_cache(unmasked, p.capture, no_window, chain, nullptr, linalg::cpu_backend(), nullptr, CompressRoute::host);
      for (int l = 0; l < 2; ++l) {
        ASSERT_TRUE(host.keep(l).defined()) << arch << " " << n;
        EXPECT_TRUE(at::equal(host.keep(l), resident.keep(l))) << arch << " " << n << " layer " << l;
        EXPECT_EQ(host.keep(l).sum().item<std::int64_t>(), 5 * model.config().num_kv_heads) << arch << " " << n;
        EXPECT_EQ(source.window(l), l == 0 ? 16 : 0) << arch;  // the tiny Gemmas slide on layer 0
        EXPECT_EQ(source.rope(l).inv_freq(), model.config().rope_of(l).inv_freq()) << arch << " layer " << l;
        if (arch == "gemma2" && n == 12) EXPECT_TRUE(at::equal(host.keep(l), unmasked.keep(l))) << "layer " << l;
      }
    }
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace kvlab::harness
