// duoattention against a plain transcription of the authors' code written here
// (mit-han-lab/duo-attention duo_attn/utils.py: load_attn_pattern's np.clip, sparsify_attention_heads'
// U(0, 1e-6) noise, np.quantile with linear interpolation, `>= threshold`; the streaming heads'
// cache of the first sink and last recent tokens), hand-worked edge cases (ties, clipping, sparsity
// 0 and 1, sink + recent ≥ T), bytes counted from the kept cells, bad keys and files, and the spec.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>

#include <unistd.h>

#include "compressors/chain.h"
#include "compressors/methods/eviction.h"
#include "compressors/test_caches.h"
#include "core/error.h"

namespace kvlab::compressors {
namespace {

using ::testing::HasSubstr;
using testing::error_of;
using testing::kept_tokens;

using Pattern = std::vector<std::vector<double>>;

// A folder of this process's own (so concurrent runs, e.g. under ASan, never share a file).
std::filesystem::path test_dir() {
  const auto dir = std::filesystem::temp_directory_path() / fmt::format("kvlab_duoattention_test_{}", ::getpid());
  std::filesystem::create_directories(dir);
  return dir;
}

// Writes `rows` as the authors' np.savetxt(delimiter="\t") does (%.18e) to a temp file.
std::string write_pattern(const Pattern& rows, const std::string& name = "pattern") {
  const auto path = (test_dir() / (name + ".tsv")).string();
  std::ofstream out(path);
  for (const auto& r : rows) {
    for (std::size_t i = 0; i < r.size(); ++i) out << (i ? "\t" : "") << fmt::format("{:.18e}", r[i]);
    out << "\n";
  }
  return path;
}

std::string write_text(const std::string& text, const std::string& name) {
  const auto path = (test_dir() / (name + ".tsv")).string();
  std::ofstream(path) << text;
  return path;
}

KeepMasks run(const std::string& params, const CacheSource& cache) {
  return make_eviction(parse_stage(method("duoattention"), params))->select({cache, linalg::cpu_backend()});
}

// np.quantile(a, q) with the default linear method, transcribed from numpy 1.24's
// numpy/lib/function_base.py (_QuantileMethods["linear"], _quantile, _lerp): virtual index
// (n − 1)·q, floor and floor + 1 clipped to [0, n − 1], then a + (b − a)·t, computed from b as
// b − (b − a)·(1 − t) when t ≥ 0.5.
double np_quantile(std::vector<double> a, double q) {
  std::sort(a.begin(), a.end());
  const auto n = static_cast<double>(a.size());
  const double idx = (n - 1) * q;
  const double prev = std::floor(idx);
  const auto lo = static_cast<std::size_t>(std::clamp(prev, 0.0, n - 1));
  const auto hi = static_cast<std::size_t>(std::clamp(prev + 1, 0.0, n - 1));
  const double t = idx - prev, diff = a[hi] - a[lo];
  return t >= 0.5 ? a[hi] - diff * (1 - t) : a[lo] + diff * t;
}

// load_attn_pattern + sparsify_attention_heads, transcribed: clip to [0, 1], add U(0, 1e-6) noise
// (drawn here from `seed`), threshold = quantile at `sparsity` (or the given threshold when
// sparsity < 0, standing for None), 2 when sparsity ≥ 1, −1 when sparsity ≤ 0 (only when given),
// retrieval = value ≥ threshold. Returns [L][H] 1 = retrieval.
std::vector<std::vector<int>> authors_heads(Pattern p, double sparsity, double threshold, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> noise(0, 1e-6);
  std::vector<double> flat;
  for (auto& r : p)
    for (auto& v : r) {
      v = std::clamp(v, 0.0, 1.0) + noise(rng);
      flat.push_back(v);
    }
  if (sparsity >= 0) {
    threshold = np_quantile(flat, sparsity);
    if (sparsity >= 1) threshold = 2;
    if (sparsity <= 0) threshold = -1;
  }
  std::vector<std::vector<int>> out;
  for (const auto& r : p) {
    out.emplace_back();
    for (double v : r) out.back().push_back(v >= threshold);
  }
  return out;
}

// The streaming cache: a streaming head keeps tokens [0, sink) and [T − recent, T) (kvpress masks
// keys[sink : -recent] of streaming heads, recent ≥ 1); a retrieval head keeps all. [T, H] per layer.
KeepMasks streaming_masks(const std::vector<std::vector<int>>& heads, std::int64_t T, std::int64_t sink, std::int64_t recent) {
  KeepMasks out;
  for (const auto& row : heads) {
    const auto H = static_cast<std::int64_t>(row.size());
    std::vector<std::uint8_t> m(static_cast<std::size_t>(T * H), 1);
    for (std::int64_t g = 0; g < H; ++g)
      if (!row[static_cast<std::size_t>(g)])
        for (std::int64_t t = sink; t < T - recent; ++t) m[static_cast<std::size_t>(t * H + g)] = 0;
    out.push_back(std::move(m));
  }
  return out;
}

// L = 4, H_kv = 3 (GQA, 6 query heads), D = 8, T = 40, W = 4. Twelve distinct pattern values,
// at least 1e-3 apart (so the authors' 1e-6 noise never reorders them), one below 0 and one above
// 1 (clipped to 0 and 1, still distinct from the rest), as the authors' files hold.
CacheShape fixture_shape() { return {4, 3, 6, 8, 40, 4, 0}; }
Pattern fixture_pattern() {
  return {{0.859, -0.0002, 0.652}, {1.3, 0.273, 0.0405}, {0.691, 0.961, 0.35}, {0.73, 0.117, 0.5}};
}

TEST(DuoAttention, KeepsWhatATranscriptionOfTheAuthorsKeeps) {
  const auto cache = testing::random_cache(fixture_shape(), 3);
  const auto path = write_pattern(fixture_pattern());
  const std::int64_t T = fixture_shape().tokens;
  for (double s : {0.0, 0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9, 0.99, 1.0})
    for (std::uint64_t seed : {1u, 2u, 3u})
      for (const auto& [sink, recent] : std::vector<std::pair<int, int>>{{4, 8}, {0, 1}, {1, 3}}) {
        const auto params = fmt::format("pattern={},sparsity={},sink={},recent={}", path, s, sink, recent);
        EXPECT_EQ(run(params, cache), streaming_masks(authors_heads(fixture_pattern(), s, 0, seed), T, sink, recent))
            << params << " noise seed " << seed;
      }
  for (double tau : {0.0, 0.117, 0.3, 0.5, 0.8, 1.0})
    for (std::uint64_t seed : {1u, 2u}) {
      const auto params = fmt::format("pattern={},threshold={},sink=2,recent=5", path, tau);
      EXPECT_EQ(run(params, cache), streaming_masks(authors_heads(fixture_pattern(), -1, tau, seed), T, 2, 5)) << params;
    }
}

TEST(DuoAttention, NotesNameTheRetrievalHeadsAndTheKeptFractionAndBytesCountTheKeptCells) {
  const auto cache = testing::random_cache(fixture_shape(), 4);
  const auto& s = cache.shape();
  const auto path = write_pattern(fixture_pattern());
  // N = 12, p = 11·0.5 = 5.5: the 6 lowest stream. Sorted: 0 (clipped, (0,1)), 0.0405 (1,2),
  // 0.117 (3,1), 0.273 (1,1), 0.35 (2,2), 0.5 (3,2) | 0.652 (0,2), 0.691 (2,0), 0.73 (3,0),
  // 0.859 (0,0), 0.961 (2,1), 1 (clipped, (1,0)).
  const auto spec = parse_spec(fmt::format("duoattention:pattern={},sparsity=0.5,sink=3,recent=7", path));
  const auto stage = make_eviction(spec.stages[0]);
  const auto notes = stage->notes(s);
  EXPECT_EQ(notes["retrieval_heads"], nlohmann::json::parse("[[0,0],[0,2],[1,0],[2,0],[2,1],[3,0]]"));
  EXPECT_EQ(notes["retrieval_count"], 6);
  EXPECT_EQ(notes["streaming_count"], 6);
  EXPECT_DOUBLE_EQ(notes["head_sparsity"].get<double>(), 0.5);
  // Kept cells: 6 heads × 40 + 6 heads × (3 + 7), over 12 × 40 (exact in double).
  EXPECT_DOUBLE_EQ(notes["kept_fraction"].get<double>(), (6.0 * 40 + 6.0 * 10) / (12.0 * 40));
  EXPECT_DOUBLE_EQ(notes["kvpress_compression_ratio"].get<double>(), 0.5 * (1 - 10.0 / 40));
  EXPECT_EQ(notes["threshold"], 0.652);  // the lowest retrieval value reproduces the choice
  // The masks agree with the notes, head by head.
  const auto masks = stage->select({cache, linalg::cpu_backend()});
  std::int64_t cells = 0;
  for (int l = 0; l < s.layers; ++l)
    for (int g = 0; g < s.kv_heads; ++g) cells += static_cast<std::int64_t>(kept_tokens(masks, l, g, s).size());
  EXPECT_EQ(cells, 6 * 40 + 6 * 10);
  // Bytes: the kept cells' fp16 keys and values (2 · D · 2 bytes) and their int32 token index.
  auto c = compress_chain({cache, linalg::cpu_backend()}, spec);
  EXPECT_EQ(c->bytes(), cells * (2 * s.head_dim * 2 + 4));
  EXPECT_EQ(c->notes()["eviction"]["retrieval_heads"], notes["retrieval_heads"]);
}

// One layer per row of `p`, H_kv = row length, T tokens, identity RoPE not needed (selection
// reads only the shape).
InMemoryCache shape_cache(int L, int H, std::int64_t T) { return testing::random_cache({L, H, H, 2, T, 1, 0}, 1); }

std::set<std::int64_t> range(std::int64_t a, std::int64_t b) {
  std::set<std::int64_t> out;
  for (auto t = a; t < b; ++t) out.insert(t);
  return out;
}

TEST(DuoAttention, HandWorkedEdgeCases) {
  const auto cache = shape_cache(2, 2, 10);
  const auto& s = cache.shape();
  const auto all = range(0, 10);
  const auto path = write_pattern({{0.9, 0.1}, {0.3, 0.7}}, "edges");
  // sparsity 0: every head retrieves; 1: every head streams (the authors' thresholds −1 and 2).
  for (int l = 0; l < 2; ++l)
    for (int g = 0; g < 2; ++g) {
      EXPECT_EQ(kept_tokens(run("pattern=" + path + ",sparsity=0,sink=1,recent=2", cache), l, g, s), all);
      EXPECT_EQ(kept_tokens(run("pattern=" + path + ",sparsity=1,sink=1,recent=2", cache), l, g, s),
                (std::set<std::int64_t>{0, 8, 9}));
    }
  // sink + recent ≥ T: streaming heads keep everything too (6 + 4 = 10; 64 + 256 by default).
  for (const auto* keys : {",sparsity=1,sink=6,recent=4", ",sparsity=1,sink=0,recent=10", ",sparsity=1"})
    for (int g = 0; g < 2; ++g) EXPECT_EQ(kept_tokens(run("pattern=" + path + keys, cache), 1, g, s), all) << keys;
  // N = 4, sparsity 0.5: p = 1.5, so 2 stream (0.1 and 0.3); sparsity 1/3: p = 1 exactly, 1 streams
  // (np.quantile returns the value at rank 1, 0.3, which is not below itself).
  const auto kept = [&](const std::string& keys, int l, int g) { return kept_tokens(run("pattern=" + path + keys, cache), l, g, s); };
  EXPECT_EQ(kept(",sparsity=0.5,sink=1,recent=1", 0, 0), all);
  EXPECT_EQ(kept(",sparsity=0.5,sink=1,recent=1", 0, 1), (std::set<std::int64_t>{0, 9}));
  EXPECT_EQ(kept(",sparsity=0.5,sink=1,recent=1", 1, 0), (std::set<std::int64_t>{0, 9}));
  EXPECT_EQ(kept(",sparsity=0.5,sink=1,recent=1", 1, 1), all);
  const auto third = run(fmt::format("pattern={},sparsity={},sink=1,recent=1", path, 1.0 / 3), cache);
  EXPECT_EQ(kept_tokens(third, 0, 1, s), (std::set<std::int64_t>{0, 9}));
  EXPECT_EQ(kept_tokens(third, 1, 0, s), all);
  // threshold replaces sparsity: α ≥ 0.7 retrieve, the boundary value included.
  EXPECT_EQ(kept(",sparsity=1,threshold=0.7,sink=0,recent=1", 1, 1), all);
  EXPECT_EQ(kept(",sparsity=1,threshold=0.7,sink=0,recent=1", 1, 0), (std::set<std::int64_t>{9}));
}

TEST(DuoAttention, TiesStreamTheLowerLayerAndHeadFirstAndClippingMakesTies) {
  const auto cache = shape_cache(2, 2, 6);
  const auto& s = cache.shape();
  const auto all = range(0, 6), window = std::set<std::int64_t>{0, 5};
  const auto retrieval = [&](const std::string& path, const std::string& keys) {
    const auto m = run("pattern=" + path + keys + ",sink=1,recent=1", cache);
    std::vector<int> out;
    for (int l = 0; l < 2; ++l)
      for (int g = 0; g < 2; ++g) out.push_back(kept_tokens(m, l, g, s) == all ? 1 : kept_tokens(m, l, g, s) == window ? 0 : -1);
    return out;
  };
  // Three heads tie at 0.5 for the one streaming place left after 0.2 (N = 4, s = 0.5: 2 stream):
  // kvlab streams the first of them in (layer, head) order, (0, 0); the authors' noise picks one
  // of the three at random, always with the same count and the untied heads alike.
  const auto tied = Pattern{{0.5, 0.5}, {0.5, 0.2}};
  const auto path = write_pattern(tied, "ties");
  EXPECT_EQ(retrieval(path, ",sparsity=0.5"), (std::vector<int>{0, 1, 1, 0}));
  for (std::uint64_t seed = 1; seed <= 20; ++seed) {
    const auto a = authors_heads(tied, 0.5, 0, seed);
    EXPECT_EQ(a[0][0] + a[0][1] + a[1][0], 2) << seed;  // one of the tied three streams
    EXPECT_EQ(a[1][1], 0) << seed;
  }
  // Threshold ties: every tied value ≥ τ retrieves (no noise here; theirs adds < 1e-6, which can only raise).
  EXPECT_EQ(retrieval(path, ",threshold=0.5"), (std::vector<int>{1, 1, 1, 0}));
  // Clipping: −0.3 and 0 both become 0 and tie, so (0, 0) streams before (0, 1), although
  // unclipped (0, 1) would be lower; 1.7 and 1 tie at the top.
  const auto clipped = write_pattern({{0.0, -0.3}, {1.0, 1.7}}, "clipped");
  EXPECT_EQ(retrieval(clipped, ",sparsity=0.25"), (std::vector<int>{0, 1, 1, 1}));  // p = 0.75: 1 streams
  EXPECT_EQ(retrieval(clipped, ",threshold=1"), (std::vector<int>{0, 0, 1, 1}));
}

TEST(DuoAttention, BadKeysAndFilesAreErrorsNamingTheKey) {
  const auto cache = testing::random_cache(fixture_shape(), 1);
  const auto good = write_pattern(fixture_pattern());
  const auto err = [&](const std::string& spec) {
    return error_of([&] { make_eviction(parse_spec(spec).stages[0])->select({cache, linalg::cpu_backend()}); });
  };
  EXPECT_THAT(err("duoattention"), HasSubstr("key 'pattern' is required"));
  EXPECT_THAT(err("duoattention:pattern=/nonexistent/full_attention_heads.tsv"), HasSubstr("'pattern': cannot open"));
  // The cache has 4 layers × 3 KV heads: a file of 3 rows, or of 2 values per row, does not fit.
  EXPECT_THAT(err("duoattention:pattern=" + write_pattern({{0.1, 0.2, 0.3}, {0.4, 0.5, 0.6}, {0.7, 0.8, 0.9}}, "rows")),
              HasSubstr("3 rows x 3 values, but the cache has 4 layers x 3 KV heads"));
  EXPECT_THAT(err("duoattention:pattern=" + write_pattern({{0.1, 0.2}, {0.4, 0.5}, {0.7, 0.8}, {0.1, 0.1}}, "cols")),
              HasSubstr("4 rows x 2 values, but the cache has 4 layers x 3 KV heads"));
  EXPECT_THAT(err("duoattention:pattern=" + write_text("0.1\t0.2\t0.3\n0.1\tabc\t0.3\n", "word")),
              AllOf(HasSubstr("'pattern'"), HasSubstr("line 2: 'abc' is not a finite number")));
  EXPECT_THAT(err("duoattention:pattern=" + write_text("0.1\t0.2\tnan\n", "nan")), HasSubstr("'nan' is not a finite number"));
  EXPECT_THAT(err("duoattention:pattern=" + write_text("0.1\t\t0.3\n", "empty_field")), HasSubstr("'' is not a finite number"));
  EXPECT_THAT(err("duoattention:pattern=" + write_text("0.1\t0.2\t0.3\n0.1\t0.2\n", "ragged")),
              HasSubstr("line 2 has 2 values, the first row 3"));
  EXPECT_THAT(err("duoattention:pattern=" + write_text("# only a comment\n\n", "blank")), HasSubstr("has no rows"));
  // Comments and blank lines are skipped, as np.loadtxt does.
  EXPECT_EQ(err("duoattention:pattern=" + write_text("# a\n0.1\t0.2\t0.3\n\n0.4\t0.5\t0.6\n0.7\t0.8\t0.9\n0.1\t0.2\t0.3\n", "commented")),
            "(no error)");
  EXPECT_THAT(err("duoattention:pattern=" + good + ",sparsity=1.5"), HasSubstr("'sparsity'"));
  EXPECT_THAT(err("duoattention:pattern=" + good + ",threshold=high"), HasSubstr("'threshold'"));
  EXPECT_THAT(err("duoattention:pattern=" + good + ",threshold=1.5"), HasSubstr("'threshold'"));
  EXPECT_THAT(err("duoattention:pattern=" + good + ",sink=-1"), HasSubstr("'sink'"));
  EXPECT_THAT(err("duoattention:pattern=" + good + ",recent=0"), HasSubstr("'recent'"));
  // No keep/budget: the kept fraction follows from sparsity (kvpress refuses a compression ratio too).
  EXPECT_THAT(err("duoattention:pattern=" + good + ",keep=0.5"), HasSubstr("unknown key 'keep'"));
  EXPECT_THAT(err("duoattention:pattern=" + good + ",budget=64"), HasSubstr("unknown key 'budget'"));
  // The authors' directories hold '=' (lr=0.02-...), which a spec value may not.
  EXPECT_THAT(err("duoattention:pattern=a/lr=0.02/full_attention_heads.tsv"), HasSubstr("'pattern'"));
}

TEST(DuoAttention, RegistryEntryAndSpecRoundTrip) {
  const auto canonical = parse_spec("duoattention").to_string();
  EXPECT_EQ(canonical, "duoattention:pattern=,sparsity=0.5,threshold=none,sink=64,recent=256");
  EXPECT_EQ(parse_spec(canonical).to_string(), canonical);
  const auto path = write_pattern(fixture_pattern());
  const auto given = parse_spec("duoattention:recent=8,pattern=" + path + ",threshold=0.25").to_string();
  EXPECT_EQ(given, "duoattention:pattern=" + path + ",sparsity=0.5,threshold=0.25,sink=64,recent=8");
  EXPECT_EQ(parse_spec(given).to_string(), given);
  const auto& def = method("duoattention");
  EXPECT_EQ(def.kind, StageKind::eviction);
  EXPECT_TRUE(def.layer_local);
  EXPECT_FALSE(def.needs.attention_inputs || def.needs.checkpoint || def.needs.live_model);
  EXPECT_THAT(describe_methods(), HasSubstr("duoattention"));
  // Chains: with KIVI after it, scored layer by layer like the whole cache.
  const auto cache = testing::random_cache(fixture_shape(), 6);
  testing::expect_eviction_chains_with_kivi("duoattention:sink=2,recent=4,pattern=" + path, cache);
}

}  // namespace
}  // namespace kvlab::compressors
