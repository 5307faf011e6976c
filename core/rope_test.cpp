// RoPE against closed forms: the llama3 band split of docs/models.md §2.3, the rotation
// as a norm-preserving map whose inverse undoes it, and the defining property that a rotated
// query·key product depends only on the position difference. The inverse frequencies against
// torch itself (rope_test.py under /usr/bin/python3, skipped without python3-torch), against
// bit patterns torch produced, and against the float32 recipe restated step by step. LongRoPE:
// its two tables against torch (rope_test.py restates _compute_longrope_parameters), the switch
// at original_max_position_embeddings, the attention factor's closed form and its effect on the
// rotation.
#include "core/rope.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <numbers>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"

namespace kvlab::core {
namespace {

const char* kLlama31 = R"({"hidden_size": 4096, "num_attention_heads": 32, "rope_theta": 500000.0,
  "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"}})";

TEST(Rope, Llama31BandsSplit29Unchanged6Blended29Divided) {
  const auto scaled = Rope::from_config(kLlama31, 0);
  const auto plain = Rope::standard(128, 500000.0);
  ASSERT_EQ(scaled.inv_freq().size(), 64u);
  int unchanged = 0, divided = 0, blended = 0;
  for (std::size_t i = 0; i < 64; ++i) {
    const double a = scaled.inv_freq()[i], b = plain.inv_freq()[i];
    if (std::abs(a - b) <= 1e-7 * b) ++unchanged;
    else if (std::abs(a - b / 8) <= 1e-7 * b) ++divided;
    else ++blended;
  }
  EXPECT_EQ(unchanged, 29);
  EXPECT_EQ(blended, 6);
  EXPECT_EQ(divided, 29);
  EXPECT_FLOAT_EQ(scaled.inv_freq()[0], 1.0f);
  EXPECT_NEAR(scaled.inv_freq()[63], 3.0689e-7, 1e-10);
}

TEST(Rope, ConfigLeniency) {
  // "type" instead of "rope_type", rope_theta default 10000, head_dim from hidden/heads.
  const auto a = Rope::from_config(R"({"hidden_size": 64, "num_attention_heads": 4,
      "rope_scaling": {"type": "linear", "factor": 2.0}})", 0);
  ASSERT_EQ(a.head_dim(), 16);
  EXPECT_FLOAT_EQ(a.inv_freq()[1], static_cast<float>(std::pow(10000.0, -2.0 / 16) / 2));
  // transformers v5: rope_parameters carries the theta.
  const auto b = Rope::from_config(R"({"head_dim": 8, "rope_parameters": {"rope_type": "default", "rope_theta": 100.0}})", 0);
  EXPECT_FLOAT_EQ(b.inv_freq()[1], static_cast<float>(std::pow(100.0, -2.0 / 8)));
  EXPECT_TRUE(Rope::from_config(R"({"rope_type": "none"})", 16).is_identity());
  EXPECT_THROW(Rope::from_config(R"({"head_dim": 8, "rope_scaling": {"rope_type": "yarn", "factor": 4}})", 0), Error);
  // yarn means LongRoPE only on phi3 (Phi3Config's renaming); elsewhere it stays refused.
  EXPECT_THROW(Rope::from_config(R"({"head_dim": 4, "rope_scaling": {"rope_type": "yarn", "short_factor": [1, 1],
      "long_factor": [2, 2]}, "original_max_position_embeddings": 8, "max_position_embeddings": 32})", 0), Error);
  EXPECT_THROW(Rope::from_config("not json", 8), Error);
}

TEST(Rope, PartialRotaryRotatesTheFirstChannelsAndPassesTheRest) {
  // transformers (Phi-4-mini, partial_rotary_factor 0.75): dim = int(head_dim · factor); the
  // table is the default rule over dim (arange(0, dim, 2) / dim); apply_rotary_pos_emb rotates
  // x[..., :dim] pairing j with j + dim/2 and concatenates x[..., dim:] unchanged.
  const auto r = Rope::from_config(R"({"head_dim": 16, "rope_theta": 10000.0, "partial_rotary_factor": 0.75})", 0);
  ASSERT_EQ(r.head_dim(), 16);
  ASSERT_EQ(r.rotary_dim(), 12);
  EXPECT_EQ(r.inv_freq(), torch_default_inv_freq(12, 10000.0));
  EXPECT_NE(r.describe().find("rotary=12/16"), std::string::npos) << r.describe();
  // transformers v5 keeps the factor inside rope_parameters: the same table.
  const auto v5 = Rope::from_config(
      R"({"head_dim": 16, "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.75}})", 0);
  EXPECT_EQ(v5.inv_freq(), r.inv_freq());
  // The rotation against its closed form in doubles (angle p·inv_freq[j] formed in f32 as HF).
  const int n = 5, heads = 3, D = 16, half = 6;
  std::mt19937 gen(3);
  std::normal_distribution<float> dist;
  std::vector<float> x(n * heads * D);
  for (auto& v : x) v = dist(gen);
  const std::vector<std::int64_t> pos = {0, 1, 7, 100, 4095};
  auto y = x;
  r.apply(y, n, heads, pos);
  for (int t = 0; t < n; ++t)
    for (int h = 0; h < heads; ++h) {
      const float* a = x.data() + (t * heads + h) * D;
      const float* b = y.data() + (t * heads + h) * D;
      for (int j = 0; j < half; ++j) {
        const double angle = static_cast<float>(pos[t]) * r.inv_freq()[j];
        EXPECT_NEAR(b[j], a[j] * std::cos(angle) - a[j + half] * std::sin(angle), 1e-5) << t << " " << j;
        EXPECT_NEAR(b[j + half], a[j + half] * std::cos(angle) + a[j] * std::sin(angle), 1e-5) << t << " " << j;
      }
      for (int j = 2 * half; j < D; ++j) EXPECT_EQ(b[j], a[j]) << "channel " << j << " passes through";
    }
  r.apply(y, n, heads, pos, true);  // the inverse undoes it
  for (std::size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(y[i], x[i], 1e-5);
  // Rotary channels that cannot pair, and factors outside (0, 1], are errors naming the key.
  for (const char* bad : {R"({"head_dim": 10, "partial_rotary_factor": 0.5})", R"({"head_dim": 16, "partial_rotary_factor": 0})",
                          R"({"head_dim": 16, "partial_rotary_factor": 1.5})"}) {
    try {
      Rope::from_config(bad, 0);
      ADD_FAILURE() << "accepted " << bad;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("partial_rotary_factor"), std::string::npos) << e.what();
    }
  }
}

TEST(Rope, RotationPreservesNormsInvertsAndDependsOnPositionDifference) {
  const auto rope = Rope::standard(16, 10000.0);
  std::mt19937 rng(3);
  std::normal_distribution<float> n;
  std::vector<float> q(16), k(16);
  for (auto& x : q) x = n(rng);
  for (auto& x : k) x = n(rng);
  auto rotated_dot = [&](std::int64_t pq, std::int64_t pk) {
    auto a = q, b = k;
    const std::vector<std::int64_t> p1{pq}, p2{pk};
    rope.apply(a, 1, 1, p1);
    rope.apply(b, 1, 1, p2);
    double dot = 0;
    for (int i = 0; i < 16; ++i) dot += double{a[i]} * b[i];
    return dot;
  };
  EXPECT_NEAR(rotated_dot(10, 3), rotated_dot(107, 100), 1e-4);   // only p_q − p_k matters
  EXPECT_NEAR(rotated_dot(5, 5), rotated_dot(0, 0), 1e-5);        // same position: the plain product
  auto x = q;
  const std::vector<std::int64_t> pos{1234};
  rope.apply(x, 1, 1, pos);
  double n0 = 0, n1 = 0;
  for (int i = 0; i < 16; ++i) n0 += double{q[i]} * q[i], n1 += double{x[i]} * x[i];
  EXPECT_NEAR(n0, n1, 1e-4 * n0);
  // Pairing is rotate_half: dimension 0 rotates with dimension 8 at inv_freq[0] = 1.
  std::vector<float> e(16, 0.0f);
  e[0] = 1;
  const std::vector<std::int64_t> one{1};
  rope.apply(e, 1, 1, one);
  EXPECT_NEAR(e[0], std::cos(1.0), 1e-6);
  EXPECT_NEAR(e[8], std::sin(1.0), 1e-6);
  rope.apply(x, 1, 1, pos, /*inverse=*/true);
  for (int i = 0; i < 16; ++i) EXPECT_NEAR(x[i], q[i], 1e-4);
}

std::uint32_t bits(float x) { return std::bit_cast<std::uint32_t>(x); }
float from_bits(std::uint32_t b) { return std::bit_cast<float>(b); }

// A product rounded to f32 on its own (no fma contraction under -march=native), as torch's
// separate tensor kernels round it.
float product(float a, float b) {
  volatile float p = a * b;
  return p;
}

// torch's float32 default table restated: t = f32(2i) / f32(D), p = f32(θ) ** t (Sleef's lane
// function on the leading floor(n/B)·B entries, powf on the rest), inv = 1 / p.
std::vector<float> default_table(int d, double theta, int block) {
  const int half = d / 2, vector_end = block > 0 ? half / block * block : 0;
  std::vector<float> out;
  for (int i = 0; i < half; ++i) {
    const float t = static_cast<float>(2 * i) / static_cast<float>(d);
    const float base = static_cast<float>(theta);
    const float p = i < vector_end ? sleef_powf_u10(base, t) : powf(base, t);
    out.push_back(1.0f / p);
  }
  return out;
}

TEST(Rope, DefaultTableIsTheFloat32RecipeStepByStep) {
  for (int block : {0, 16, 32})
    for (int d : {2, 8, 16, 24, 32, 40, 48, 64, 80, 96, 128, 160, 256})
      for (double theta : {10000.0, 500000.0, 1e6, 5e6, 12345.678, 1e8}) {
        const auto want = default_table(d, theta, block);
        const auto got = Rope::standard(d, theta, block).inv_freq();
        ASSERT_EQ(got.size(), want.size());
        for (std::size_t i = 0; i < want.size(); ++i)
          ASSERT_EQ(bits(got[i]), bits(want[i])) << "D=" << d << " θ=" << theta << " block " << block << " i=" << i;
      }
  EXPECT_EQ(Rope::standard(128, 1e6).inv_freq(), default_table(128, 1e6, kTorchPowBlock));
}

// Bit patterns torch 1.13 produced (AVX2 path: Sleef_powf8_u10) where Sleef's powf is one ulp
// below the correctly rounded powf: the pow itself and the resulting inv_freq entry.
TEST(Rope, SleefPowMatchesTorchWhereItIsNotCorrectlyRounded) {
  struct Golden {
    int d;
    double theta;
    int i;
    std::uint32_t pow, correctly_rounded, inv;
  };
  for (const Golden& g : {Golden{128, 1e6, 37, 0x4537eba2, 0x4537eba3, 0x39b229fb},
                          Golden{48, 10000.0, 10, 0x4239a9dd, 0x4239a9de, 0x3cb07dc7},
                          Golden{128, 5e6, 19, 0x42c2e383, 0x42c2e384, 0x3c282311}}) {
    const float t = static_cast<float>(2 * g.i) / static_cast<float>(g.d), base = static_cast<float>(g.theta);
    EXPECT_EQ(bits(sleef_powf_u10(base, t)), g.pow) << g.d << " " << g.theta << " " << g.i;
    EXPECT_EQ(bits(powf(base, t)), g.correctly_rounded) << "glibc's powf is correctly rounded";
    EXPECT_EQ(bits(torch_default_inv_freq(g.d, g.theta, 16)[g.i]), g.inv);
    EXPECT_EQ(bits(torch_default_inv_freq(g.d, g.theta, 0)[g.i]), bits(1.0f / from_bits(g.correctly_rounded)));
  }
}

TEST(Rope, SleefPowIsWithinOneUlpOfCorrectlyRoundedPow) {
  // Sleef's documented bound for powf_u10 (1.0 ulp), over the RoPE domain: bases 2 … 1e9,
  // exponents in [0, 1).
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> log_base(std::log(2.0), std::log(1e9));
  std::uniform_real_distribution<float> exponent(0.0f, 1.0f);
  int differ = 0;
  for (int k = 0; k < 200000; ++k) {
    const float x = static_cast<float>(std::exp(log_base(rng))), y = exponent(rng);
    const float got = sleef_powf_u10(x, y), exact = powf(x, y);
    const auto gap = static_cast<std::int64_t>(bits(got)) - static_cast<std::int64_t>(bits(exact));
    ASSERT_LE(std::abs(gap), 1) << x << " ** " << y;
    differ += gap != 0;
  }
  EXPECT_GT(differ, 0);                // not merely powf: Sleef differs somewhere…
  EXPECT_LT(differ, 200000 / 20);      // …but rarely
  EXPECT_EQ(sleef_powf_u10(10000.0f, 0.0f), 1.0f);
  EXPECT_EQ(sleef_powf_u10(10000.0f, 0.5f), 100.0f);
}

TEST(Rope, LinearAndLlama3AreTheFloat32TensorOpsStepByStep) {
  const auto base = Rope::standard(128, 500000.0).inv_freq();
  const auto linear = Rope::from_config(R"({"head_dim": 128, "rope_theta": 500000.0,
      "rope_scaling": {"rope_type": "linear", "factor": 3.0}})", 0).inv_freq();
  for (std::size_t i = 0; i < base.size(); ++i) EXPECT_EQ(bits(linear[i]), bits(base[i] / 3.0f)) << i;
  // _compute_llama3_parameters with every Python float cast to f32 where it meets the tensor.
  const auto llama = Rope::from_config(kLlama31, 0).inv_freq();
  const float factor = 8, low = 1, high = 4, old = 8192, two_pi = static_cast<float>(2 * std::numbers::pi);
  int medium = 0;
  for (std::size_t i = 0; i < base.size(); ++i) {
    const float wavelen = product(1.0f / base[i], two_pi);
    const float scaled = wavelen > old / low ? base[i] / factor : base[i];
    const float smooth = (product(1.0f / wavelen, old) - low) / (high - low);
    const float smoothed = product(1.0f - smooth, scaled) / factor + product(smooth, scaled);
    const bool is_medium = !(wavelen < old / high) && !(wavelen > old / low);
    medium += is_medium;
    EXPECT_EQ(bits(llama[i]), bits(is_medium ? smoothed : scaled)) << i;
  }
  EXPECT_EQ(medium, 6);
}

// Runs rope_test.py on `cases` (a JSON list) with ATEN_CPU_CAPABILITY=capability; returns torch's
// reported capability and one row of f32 values per case.
struct TorchTables {
  std::string capability;
  std::vector<std::vector<float>> rows;
};

TorchTables torch_tables(const std::string& capability, const std::string& cases) {
  const std::string command =
      fmt::format("ATEN_CPU_CAPABILITY={} /usr/bin/python3 '{}/core/rope_test.py' '{}' 2>/dev/null", capability,
                  KVLAB_SOURCE_DIR, cases);
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(command.c_str(), "r"), pclose);
  std::string out;
  char buffer[4096];
  while (pipe && std::fgets(buffer, sizeof buffer, pipe.get())) out += buffer;
  std::istringstream lines(out);
  TorchTables t;
  std::getline(lines, t.capability);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream words(line);
    std::vector<float> row;
    for (std::string w; words >> w;) row.push_back(from_bits(static_cast<std::uint32_t>(std::stoul(w, nullptr, 16))));
    t.rows.push_back(std::move(row));
  }
  return t;
}

TEST(Rope, InverseFrequenciesMatchTorchBitForBit) {
  if (std::system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "/usr/bin/python3 has no torch (Debian: python3-torch)";
  struct Case {
    std::string config;
    int head_dim;
  };
  std::vector<Case> cases;
  for (int d : {2, 8, 16, 24, 32, 40, 48, 64, 80, 96, 128, 160, 256})
    for (const char* theta : {"10000.0", "500000.0", "1000000.0", "5000000.0", "20000.0", "30000.0", "75000.0",
                              "12345.678", "100000000.0"})
      cases.push_back({fmt::format(R"({{"rope_theta": {}}})", theta), d});
  for (int d : {32, 64, 96, 128})
    for (const char* factor : {"2.0", "4.0", "1.5", "8.0"})
      cases.push_back(
          {fmt::format(R"({{"rope_theta": 10000.0, "rope_scaling": {{"type": "linear", "factor": {}}}}})", factor), d});
  constexpr const char* llama3 = R"({{"rope_theta": {}, "rope_scaling": {{"rope_type": "llama3", "factor": {},
      "low_freq_factor": {}, "high_freq_factor": {}, "original_max_position_embeddings": {}}}}})";
  for (int d : {64, 96, 128}) {
    cases.push_back({fmt::format(fmt::runtime(llama3), "500000.0", "8.0", "1.0", "4.0", 8192), d});   // Llama 3.1
    cases.push_back({fmt::format(fmt::runtime(llama3), "500000.0", "32.0", "1.0", "4.0", 8192), d});  // Llama 3.2
    cases.push_back({fmt::format(fmt::runtime(llama3), "10000.0", "4.0", "2.0", "8.0", 4096), d});
    cases.push_back({fmt::format(fmt::runtime(llama3), "1000000.0", "16.0", "1.5", "3.5", 3000), d});
  }
  std::string json = "[";
  for (const auto& c : cases)
    json += fmt::format(R"({}{{"config": {}, "head_dim": {}}})", json.size() > 1 ? ", " : "", c.config, c.head_dim);
  json += "]";
  int compared = 0, off_old_recipe = 0;
  for (const char* capability : {"default", "avx2", "avx512"}) {
    const TorchTables t = torch_tables(capability, json);
    ASSERT_EQ(t.rows.size(), cases.size()) << "rope_test.py under ATEN_CPU_CAPABILITY=" << capability;
    // What torch ran (an unsupported request falls back): DEFAULT, AVX2 or AVX512 on x86.
    int block = -1;
    if (t.capability == "DEFAULT") block = 0;
    if (t.capability == "AVX2") block = 16;
    if (t.capability == "AVX512") block = 32;
    if (block < 0) {
      ADD_FAILURE() << "torch reports CPU capability '" << t.capability << "': no known pow layout";
      continue;
    }
    for (std::size_t k = 0; k < cases.size(); ++k) {
      const auto ours = Rope::from_config(cases[k].config, cases[k].head_dim, block).inv_freq();
      ASSERT_EQ(ours.size(), t.rows[k].size()) << cases[k].config;
      for (std::size_t i = 0; i < ours.size(); ++i) {
        EXPECT_EQ(bits(ours[i]), bits(t.rows[k][i]))
            << t.capability << " D=" << cases[k].head_dim << " " << cases[k].config << " i=" << i;
        ++compared;
      }
      if (k < 13 * 9) {  // default rule: how often the old double-precision recipe was off
        const double theta = std::stod(cases[k].config.substr(cases[k].config.find(':') + 1));
        for (std::size_t i = 0; i < ours.size(); ++i)
          off_old_recipe += static_cast<float>(1.0 / std::pow(theta, 2.0 * i / cases[k].head_dim)) != t.rows[k][i];
      }
    }
  }
  EXPECT_GT(compared, 10000);
  EXPECT_GT(off_old_recipe, 0) << "the grid should include entries the double recipe rounds differently";
}

// A Phi-3-style LongRoPE config: head_dim 2 × long_f.size(), original_max 8, max 64 (factor 8).
std::string longrope_config(const std::string& type_key, const std::string& type, const std::vector<double>& short_f,
                            const std::vector<double>& long_f, const std::string& extra = "") {
  return fmt::format(R"({{"model_type": "phi3", "head_dim": {}, "rope_theta": 10000.0, "max_position_embeddings": 64,
      "original_max_position_embeddings": 8{}, "rope_scaling": {{"{}": "{}", "short_factor": [{}], "long_factor": [{}]}}}})",
                     2 * long_f.size(), extra, type_key, type, fmt::join(short_f, ", "), fmt::join(long_f, ", "));
}

// `text` with its first `from` replaced by `to` (which must occur).
std::string with(std::string text, const std::string& from, const std::string& to) {
  const auto at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  if (at != std::string::npos) text.replace(at, from.size(), to);
  return text;
}

// Factors as Phi-3's config.json lists them: near 1 for the short table, up to ~60 for the long
// one, with decimals that are not f32-exact (1.0800000429153442, ...).
std::vector<double> phi_like_factors(int n, double top, unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<double> f;
  for (int i = 0; i < n; ++i) f.push_back(1.0 + (top - 1.0) * i / std::max(1, n - 1) + 0.3 * u(gen));
  return f;
}

TEST(Rope, LongRopeTablesMatchTorchBitForBit) {
  if (std::system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "/usr/bin/python3 has no torch (Debian: python3-torch)";
  struct Case {
    std::string config;
    int head_dim;
    std::int64_t seq_len;
  };
  std::vector<Case> cases;
  for (int d : {8, 32, 64, 96, 128})
    for (std::int64_t seq_len : {1, 8, 9, 1000}) {  // original_max 8: short, short (== 8), long, long
      const auto s = phi_like_factors(d / 2, 1.2, 7u + d), l = phi_like_factors(d / 2, 60.0, 11u + d);
      cases.push_back({longrope_config("type", "longrope", s, l), d, seq_len});
      cases.push_back({longrope_config("rope_type", "su", s, l), d, seq_len});
    }
  // Phi-4-mini's layout: head_dim 128, partial_rotary_factor 0.75 → 48 factors over 96 channels.
  const auto s48 = phi_like_factors(48, 1.1, 5), l48 = phi_like_factors(48, 50.0, 6);
  for (std::int64_t seq_len : {8, 9})
    cases.push_back({longrope_config("type", "longrope", s48, l48, R"(, "partial_rotary_factor": 0.75)"), 96, seq_len});
  std::string json = "[";
  for (const auto& c : cases)
    json += fmt::format(R"({}{{"config": {}, "head_dim": {}, "seq_len": {}}})", json.size() > 1 ? ", " : "", c.config,
                        c.head_dim, c.seq_len);
  json += "]";
  int compared = 0;
  for (const char* capability : {"default", "avx2", "avx512"}) {
    const TorchTables t = torch_tables(capability, json);
    ASSERT_EQ(t.rows.size(), cases.size()) << "rope_test.py under ATEN_CPU_CAPABILITY=" << capability;
    const int block = t.capability == "DEFAULT" ? 0 : t.capability == "AVX2" ? 16 : t.capability == "AVX512" ? 32 : -1;
    ASSERT_GE(block, 0) << "torch reports CPU capability '" << t.capability << "'";
    for (std::size_t k = 0; k < cases.size(); ++k) {
      // The Phi-4-mini case passes head_dim 128 to from_config and compares the 48 rotary entries.
      const int head_dim = cases[k].config.find("partial") != std::string::npos ? 128 : cases[k].head_dim;
      const auto ours = Rope::from_config(cases[k].config, head_dim, block).for_length(cases[k].seq_len).inv_freq();
      ASSERT_EQ(ours.size(), t.rows[k].size()) << cases[k].config;
      for (std::size_t i = 0; i < ours.size(); ++i) {
        EXPECT_EQ(bits(ours[i]), bits(t.rows[k][i]))
            << t.capability << " D=" << cases[k].head_dim << " seq_len=" << cases[k].seq_len << " i=" << i;
        ++compared;
      }
    }
  }
  EXPECT_GT(compared, 1000);
}

TEST(Rope, LongRopeSwitchesTablesAfterOriginalMaxAndScalesByTheAttentionFactor) {
  const std::vector<double> s = {1.0, 1.5, 2.0, 3.0}, l = {4.0, 8.0, 16.0, 32.0};
  const auto r = Rope::from_config(longrope_config("type", "longrope", s, l), 0);
  ASSERT_TRUE(r.is_length_dependent());
  EXPECT_EQ(r.original_max_position(), 8);
  // sqrt(1 + ln(64 / 8) / ln(8)) = sqrt(2): the default when the config gives no attention_factor.
  EXPECT_EQ(r.attention_factor(), static_cast<float>(std::sqrt(2.0)));
  // The table: 1 / f32(f32(factor) · θ^(2i/D)), the powers within an ulp of the double closed form.
  const auto check_table = [](const Rope& rope, const std::vector<double>& f) {
    for (std::size_t i = 0; i < f.size(); ++i)
      EXPECT_NEAR(rope.inv_freq()[i], 1.0 / (f[i] * std::pow(10000.0, 2.0 * i / 8)), 4e-7 * rope.inv_freq()[i]) << i;
  };
  check_table(r, s);                 // at init: short (HF's original_inv_freq)
  check_table(r.for_length(8), s);   // seq_len == original_max: still short
  check_table(r.for_length(9), l);   // one past it: long
  check_table(r.for_length(9).for_length(3), s);
  EXPECT_NE(r.for_length(9).describe().find(" long"), std::string::npos) << r.for_length(9).describe();
  // A given attention_factor wins; factor ≤ 1 (max == original) gives 1; rope_scaling.factor
  // replaces max / original (transformers v5).
  const std::string base = longrope_config("type", "longrope", s, l);
  EXPECT_EQ(Rope::from_config(with(base, R"("type": "longrope")", R"("type": "longrope", "attention_factor": 1.25)"), 0)
                .attention_factor(), 1.25f);
  EXPECT_EQ(Rope::from_config(with(base, R"("max_position_embeddings": 64)", R"("max_position_embeddings": 8)"), 0)
                .attention_factor(), 1.0f);
  EXPECT_EQ(Rope::from_config(with(base, R"("type": "longrope")", R"("type": "longrope", "factor": 4096.0)"), 0)
                .attention_factor(), static_cast<float>(std::sqrt(1.0 + std::log(4096.0) / std::log(8.0))));
  // The rotation: a · R(p·inv_freq) x with a = attention_factor, against doubles; the inverse undoes it.
  const auto rl = r.for_length(100);
  std::mt19937 gen(5);
  std::normal_distribution<float> dist;
  std::vector<float> x(3 * 8);
  for (auto& v : x) v = dist(gen);
  const std::vector<std::int64_t> pos = {0, 9, 99};
  auto y = x;
  rl.apply(y, 3, 1, pos);
  const double a = std::sqrt(2.0);
  for (int t = 0; t < 3; ++t)
    for (int j = 0; j < 4; ++j) {
      const double angle = static_cast<float>(pos[t]) * rl.inv_freq()[j];
      const double x0 = x[t * 8 + j], x1 = x[t * 8 + j + 4];
      // Tolerance: a few f32 roundings of values of size ≤ a·(|x0| + |x1|).
      const double tol = 4 * 6e-8 * a * (std::abs(x0) + std::abs(x1)) + 1e-7;
      EXPECT_NEAR(y[t * 8 + j], a * (x0 * std::cos(angle) - x1 * std::sin(angle)), tol);
      EXPECT_NEAR(y[t * 8 + j + 4], a * (x1 * std::cos(angle) + x0 * std::sin(angle)), tol);
    }
  rl.apply(y, 3, 1, pos, true);
  for (std::size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(y[i], x[i], 1e-5);
  // Other rules do not depend on the length.
  EXPECT_FALSE(Rope::standard(8, 10000.0).is_length_dependent());
  EXPECT_EQ(Rope::standard(8, 10000.0).for_length(1 << 20).inv_freq(), Rope::standard(8, 10000.0).inv_freq());
}

TEST(Rope, LongRopeErrorsNameTheKey) {
  const std::vector<double> s = {1.0, 1.5, 2.0, 3.0}, l = {4.0, 8.0, 16.0, 32.0};
  const auto error_of = [](const std::string& config) {
    try {
      Rope::from_config(config, 0);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  EXPECT_NE(error_of(longrope_config("type", "longrope", {1.0, 1.0, 1.0}, l)).find("short_factor has 3 entries"),
            std::string::npos);
  EXPECT_NE(error_of(longrope_config("type", "longrope", s, {1.0, 0.0, 1.0, 1.0})).find("long_factor"),
            std::string::npos);
  // Outside phi3 (no Phi3Config defaults) original_max_position_embeddings must be given.
  const std::string generic =
      with(with(longrope_config("type", "longrope", s, l), R"("model_type": "phi3", )", ""),
           R"("original_max_position_embeddings": 8)", R"("unused": 8)");
  EXPECT_NE(error_of(generic).find("original_max_position_embeddings"), std::string::npos) << error_of(generic);
}

}  // namespace
}  // namespace kvlab::core
