// svd/xkv on a ResidentCache against the host route (make_low_rank + the chain's fp16 rounding +
// reconstruct), on the CPU backend, where "resident" is host memory: the same factors through a
// second code path (Gram eigenpairs without A, signs fixed on V_r before A is formed, B_l read in
// place from V_r, layers written back one by one), its eigensolver flipping signs as cuSOLVER
// may. The stored factors (A, B_l) are the host's, tensor by tensor (values equal but for a rare
// one fp16 step: both run the same BLAS, only leading dimensions differ), the bytes exactly; the
// reconstructions agree to f32 rounding (1e-6 normalized); what the spec leaves uncompressed is
// never written.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "compressors/compressed.h"
#include "compressors/dense.h"
#include "compressors/methods/kivi.h"
#include "compressors/low_rank_resident.h"
#include "compressors/methods/low_rank.h"
#include "compressors/test_caches.h"
#include "core/dtype.h"
#include "linalg/fan_out.h"

namespace kvlab::compressors {
namespace {

using testing::error_of;

// Resident = host memory, over a CacheSource; records what is written.
class HostResidentCache final : public ResidentCache {
 public:
  explicit HostResidentCache(const CacheSource& source) : source_(source) {}
  const CacheShape& shape() const override { return source_.shape(); }
  void* stream() const override { return nullptr; }
  const float* gather(const std::vector<int>& layers, Part part) override {
    const std::int64_t N = shape().width(), c = N * static_cast<std::int64_t>(layers.size());
    x_.assign(static_cast<std::size_t>(shape().tokens * c), 0.f);
    for (std::size_t i = 0; i < layers.size(); ++i)
      source_.read_layer_into(layers[i], part, x_.data() + static_cast<std::int64_t>(i) * N, c);
    return x_.data();
  }
  const void* gram_input(linalg::GramPrecision precision) override {
    ++gram_inputs_[precision];
    if (precision == linalg::GramPrecision::f64) return (x64_.assign(x_.begin(), x_.end()), x64_.data());
    if (precision != linalg::GramPrecision::bf16) return nullptr;
    x16_.resize(x_.size());
    core::f32_to_16bit(core::DType::bf16, x_, x16_);
    return x16_.data();
  }
  float* buffer(int slot, std::int64_t count) override {
    auto& b = buffers_[slot];
    b.resize(static_cast<std::size_t>(count));
    return b.data();
  }
  void upload(const float* host, std::int64_t count, float* resident) override { std::copy_n(host, count, resident); }
  // What the chain does to a tensor it stores (pack_fp16_storage, then the quantizer's packing);
  // recorded by name.
  std::int64_t store(const std::string& name, float* values, std::int64_t rows, std::int64_t cols, std::int64_t ld,
                     QuantLayout layout, bool token_rows, const KiviParams* kivi) override {
    std::vector<float> copy(static_cast<std::size_t>(rows * cols));
    for (std::int64_t i = 0; i < rows; ++i) std::copy_n(values + i * ld, cols, copy.begin() + i * cols);
    auto t = StoredTensor::fp16(name, {rows, cols}, std::move(copy), layout, token_rows);
    pack_fp16_storage({&t});
    if (kivi) kivi_quantize_tensor(t, *kivi);
    for (std::int64_t i = 0; i < rows; ++i) std::copy_n(t.values.begin() + i * cols, cols, values + i * ld);
    stored[name] = t;
    return t.bytes();
  }
  void write(int layer, Part part, const float* rows) override {
    auto& out = written[{layer, part}];
    out.assign(rows, rows + shape().tokens * shape().width());
  }
  std::int64_t store_uncompressed(int layer, Part part, const KiviParams* kivi) override {
    auto t = compressors::store_uncompressed(source_, layer, part);
    pack_fp16_storage({&t});
    if (!kivi) return t.bytes();  // the cache keeps its values
    kivi_quantize_tensor(t, *kivi);
    write(layer, part, rebuild_uncompressed(t, part, shape(), source_.rope(), source_.positions()).data.data());
    return t.bytes();
  }
  std::map<std::string, StoredTensor> stored;  // by name, as store() left them

  std::map<std::pair<int, Part>, std::vector<float>> written;
  std::map<linalg::GramPrecision, int> gram_inputs_;

 private:
  const CacheSource& source_;
  std::vector<float> x_;
  std::vector<double> x64_;
  std::vector<std::uint16_t> x16_;
  std::map<int, std::vector<float>> buffers_;
};

// One svd or xkv stage ("xkv:g=2,rk=4"), parsed by its method alone (this test links no registry).
StageSpec stage(std::string_view text) {
  const auto colon = text.find(':');
  const auto method = text.substr(0, colon);
  return parse_stage(method == "svd" ? svd_method() : xkv_method(), text.substr(colon + 1));
}
// "svd:…" or "xkv:…", optionally "+kivi:…".
ChainSpec chain_of(std::string_view text) {
  const auto plus = text.find('+');
  ChainSpec chain{{stage(text.substr(0, plus))}};
  if (plus != std::string_view::npos) chain.stages.push_back(parse_stage(kivi_method(), text.substr(plus + 6)));
  return chain;
}

double normalized_difference(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0, n = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    d += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    n += double(b[i]) * b[i];
  }
  return std::sqrt(d / n);
}

TEST(LowRankResident, MatchesTheHostRouteLayerByLayer) {
  // 6 layers, 2 heads × 8 = 16 columns per layer, 160 tokens: every group has T ≥ G·H·D.
  const CacheShape shape{6, 2, 4, 8, 160, 0, 0};
  // One BLAS thread, so one solve at a time on both routes: the host route otherwise runs two
  // single-threaded solves side by side where the resident route runs one on two threads, and
  // the f32 eigensolver rounds the two ways apart by ~1e-4 (the f32 route's own accuracy), past
  // the same-arithmetic tolerances here.
  const linalg::OneThreadPerCall same_arithmetic(linalg::cpu_backend(), 2);
  const InMemoryCache cache = testing::random_cache(shape, 7);
  for (const char* text : {"xkv:g=2,rk=6,rv=9,precision=f64", "xkv:g=4,rk=40,precision=f32",
                           "xkv:g=3,rk=5,precision=tf32,part=value", "xkv:g=2,rk=7,precision=bf16,start=1,end=3",
                           "xkv:groups=0-1/4,rk=3,rv=4", "svd:rk=16,part=key",
                           "xkv:g=2,rk=6,solver=randomized,seed=5", "svd:rk=4,solver=randomized,iters=0,precision=f32",
                           "xkv:g=2,rk=6,rv=9+kivi:bits=4,group=4,residual=32",
                           "xkv:g=2,rk=7,start=1,end=3,precision=f32+kivi:bits=2,group=5,residual=0",
                           "svd:rk=5,part=key,solver=randomized+kivi:bits=8,group=3,residual=200"}) {
    SCOPED_TRACE(text);
    const ChainSpec chain = chain_of(text);
    const StageSpec& spec = chain.stages.at(0);
    const bool kivi = chain.stages.size() > 1;
    ASSERT_TRUE(resident_low_rank_applies(chain, shape));
    const CompressContext ctx{cache, linalg::cpu_backend()};
    auto host = make_low_rank(spec)->compress(ctx);
    pack_fp16_storage(host->stored());  // the chain's finish()
    if (kivi) make_kivi(chain.stages[1])->quantize(host->stored());

    // The resident route's eigensolver returns flipped signs and reads the converted Gram
    // inputs, as cuSOLVER and the CUDA backend do: the result must not change.
    HostResidentCache resident(cache);
    testing::SignFlippingBackend flipping(/*reads_gram_input=*/true);
    EXPECT_EQ(compress_low_rank_resident(chain, resident, flipping), host->bytes());
    const auto groups = low_rank_groups(spec, shape.layers);
    std::size_t expected_writes = 0;
    for (int l = 0; l < shape.layers; ++l) {
      const auto group = std::find_if(groups.begin(), groups.end(),
                                      [&](const auto& g) { return std::find(g.begin(), g.end(), l) != g.end(); });
      const bool grouped = group != groups.end();
      const auto rebuilt = host->reconstruct(l);
      for (Part part : {Part::key, Part::value}) {
        const bool compressed = grouped && (spec.get("part") == "both" || spec.get("part") == to_string(part));
        const auto it = resident.written.find({l, part});
        // Uncompressed layers are left alone, unless KIVI quantizes them.
        ASSERT_EQ(it != resident.written.end(), compressed || kivi) << "layer " << l << " " << to_string(part);
        if (it == resident.written.end()) continue;
        ++expected_writes;
        const auto& want = (part == Part::key ? rebuilt.key : rebuilt.value).data;
        if (!kivi) {
          EXPECT_LT(normalized_difference(it->second, want), 1e-6) << "layer " << l << " " << to_string(part);
        } else {
          // A and V_r agree to f32 rounding, which may move a value across a code boundary: count them.
          std::int64_t moved = 0;
          for (std::size_t i = 0; i < want.size(); ++i) moved += std::abs(it->second[i] - want[i]) > 1e-4f * (1 + std::abs(want[i]));
          EXPECT_LE(moved, static_cast<std::int64_t>(want.size()) / 200) << "layer " << l << " " << to_string(part);
          EXPECT_LT(normalized_difference(it->second, want), 1e-2) << "layer " << l << " " << to_string(part);
        }
        if (!compressed) continue;
        // Against the input: a truncated rank shows (random data has a flat spectrum); a full
        // rank leaves only the fp16 rounding of A and B.
        const bool truncated = spec.get_int(part == Part::key ? "rk" : "rv") <
                               shape.width() * static_cast<std::int64_t>(group->size());
        const double off = normalized_difference(it->second, cache.layer(l, part).data);
        if (truncated)
          EXPECT_GT(off, 0.02);
        else
          EXPECT_LT(off, 1e-3);
      }
    }
    EXPECT_EQ(resident.written.size(), expected_writes);
    // The stored form, tensor by tensor: every factor the host stage stores (A per group and
    // part, B_l per layer and part), under its name and shape, with the same bytes. A and V_r
    // agree to f32 rounding, which may move a value across an fp16 rounding boundary (one fp16
    // step, ≤ 2⁻¹⁰ relative, 2⁻²⁴ below fp16's normal range) or, with KIVI, a group's scale or a
    // code: such values must stay rare.
    std::size_t factors = 0;
    for (const StoredTensor* want : host->stored()) {
      if (!want->name.ends_with("/A") && !want->name.ends_with("/B")) continue;  // a part left uncompressed
      ++factors;
      const auto it = resident.stored.find(want->name);
      ASSERT_NE(it, resident.stored.end()) << want->name;
      const StoredTensor& got = it->second;
      EXPECT_EQ(got.shape, want->shape) << want->name;
      EXPECT_EQ(got.bytes(), want->bytes()) << want->name;
      ASSERT_EQ(got.values.size(), want->values.size()) << want->name;
      std::int64_t moved = 0;
      for (std::size_t i = 0; i < got.values.size(); ++i) {
        const float a = got.values[i], b = want->values[i];
        if (a == b) continue;
        ++moved;
        if (!kivi) {
          EXPECT_LE(std::abs(a - b), 0x1p-10f * std::max(std::abs(a), std::abs(b)) + 0x1p-24f) << want->name;
        }
      }
      EXPECT_LE(moved, static_cast<std::int64_t>(got.values.size()) / (kivi ? 50 : 100) + 1) << want->name;
    }
    EXPECT_EQ(resident.stored.size(), factors);
    // Converted Gram inputs are made (and checked) once per decomposition where the backend reads them.
    const auto p = linalg::parse_gram_precision(spec.get("precision"));
    const bool converts =
        spec.get("solver") == "exact" && (p == linalg::GramPrecision::bf16 || p == linalg::GramPrecision::f64);
    const int decompositions = static_cast<int>(groups.size()) * (spec.get("part") == "both" ? 2 : 1);
    EXPECT_EQ(flipping.gram_inputs_checked, converts ? decompositions : 0);
    EXPECT_EQ(resident.gram_inputs_[p], converts ? decompositions : 0);
  }
}

TEST(LowRankResident, AppliesOnlyWhereTheHostRouteIsTheGramRoute) {
  const CacheShape shape{4, 2, 4, 8, 40, 0, 0};  // 40 tokens: ≥ 16 columns, < 3·16
  EXPECT_TRUE(resident_low_rank_applies(chain_of("xkv:g=2,rk=4"), shape));
  EXPECT_FALSE(resident_low_rank_applies(chain_of("xkv:g=3,rk=4"), shape));  // gesdd of X
  EXPECT_TRUE(resident_low_rank_applies(chain_of("xkv:g=3,rk=4,solver=randomized"), shape));  // HMT at any T
  EXPECT_FALSE(resident_low_rank_applies(ChainSpec{{stage("xkv:g=2,rk=4"), stage("svd:rk=4")}}, shape));
  EXPECT_FALSE(resident_low_rank_applies(ChainSpec{{StageSpec{"kivi", {}}}}, shape));
  EXPECT_TRUE(resident_low_rank_applies(chain_of("xkv:g=2,rk=4+kivi:bits=2"), shape));
  EXPECT_FALSE(resident_low_rank_applies(ChainSpec{{stage("xkv:g=2,rk=4"), stage("xkv:g=2,rk=4")}}, shape));
  const InMemoryCache cache = testing::random_cache(shape, 1);
  HostResidentCache resident(cache);
  EXPECT_NE(error_of([&] { compress_low_rank_resident(chain_of("xkv:g=3,rk=4"), resident, linalg::cpu_backend()); })
                .find("resident route"),
            std::string::npos);
  EXPECT_TRUE(resident.written.empty());
}

}  // namespace
}  // namespace kvlab::compressors
