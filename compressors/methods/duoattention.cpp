// duoattention: retrieval heads keep the whole cache, streaming heads keep the first `sink` and the
// last `recent` prompt tokens (docs/methods/duoattention.md). Xiao, Tang, Zuo, Guo, Yang, Tang, Fu,
// Han, "DuoAttention: Efficient Long-Context LLM Inference with Retrieval and Streaming Heads",
// arXiv 2410.10819; the authors' code mit-han-lab/duo-attention.
//
// Which heads retrieve comes from the authors' per-head pattern file (attn_patterns/<model>/.../
// full_attention_heads.tsv: one row per layer, one tab-separated value per KV head, the trained
// gate α), read and clipped to [0, 1] as duo_attn/utils.py load_attn_pattern does, then made
// binary as sparsify_attention_heads does:
//   sparsity s: the heads below np.quantile(α, s) (linear interpolation at rank (N − 1)·s over
//               the N = L·H_kv values) stream. For distinct values that is the ceil((N − 1)·s)
//               lowest heads; kvlab streams exactly that many, ties going to the lower
//               (layer, head) first (the authors add U(0, 1e-6) noise to break ties at random).
//               s ≤ 0 keeps every head retrieving, s ≥ 1 none, as theirs.
//   threshold τ (when given, it replaces sparsity): heads with α ≥ τ retrieve (no noise).
// Estimating a pattern from the live model (the authors' training on synthetic passkeys, kvpress's
// on-the-fly scores) is not implemented: the pattern file is required.
//
// Not a budgeted method: there is no keep/budget key. The kept fraction follows from the sparsity
// and sink + recent (kvpress's DuoAttentionPress likewise refuses a compression_ratio); notes()
// report it with the chosen heads. Selection reads only the cache's shape, so the resident route
// (DevicePath::scores) copies nothing.
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <numeric>
#include <sstream>

#include "compressors/methods/eviction.h"
#include "core/error.h"

namespace kvlab::compressors {
namespace {

// The pattern file's values [layers][heads], clipped to [0, 1] (load_attn_pattern's np.clip).
// As np.loadtxt(delimiter="\t"): blank lines and lines starting with '#' are skipped.
std::vector<std::vector<double>> read_pattern(const std::string& path) {
  if (path.empty())
    fail("duoattention: key 'pattern' is required: the path of the authors' full_attention_heads.tsv "
         "(mit-han-lab/duo-attention attn_patterns/<model>/...); estimating a pattern from the model is not implemented");
  std::ifstream in(path);
  if (!in) fail("duoattention: key 'pattern': cannot open '{}'", path);
  std::vector<std::vector<double>> rows;
  std::string line;
  for (int line_no = 1; std::getline(in, line); ++line_no) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos || line[line.find_first_not_of(" \t")] == '#') continue;
    std::vector<double> row;
    std::stringstream fields(line);
    std::string field;
    while (std::getline(fields, field, '\t')) {
      const auto b = field.find_first_not_of(' '), e = field.find_last_not_of(' ');
      const std::string text = b == std::string::npos ? std::string{} : field.substr(b, e - b + 1);
      char* end = nullptr;
      errno = 0;
      const double v = text.empty() ? 0 : std::strtod(text.c_str(), &end);
      if (text.empty() || end != text.c_str() + text.size() || !std::isfinite(v))
        fail("duoattention: key 'pattern': '{}' line {}: '{}' is not a finite number", path, line_no, text);
      row.push_back(std::clamp(v, 0.0, 1.0));
    }
    if (!rows.empty() && row.size() != rows.front().size())
      fail("duoattention: key 'pattern': '{}' line {} has {} values, the first row {}", path, line_no, row.size(),
           rows.front().size());
    rows.push_back(std::move(row));
  }
  if (rows.empty()) fail("duoattention: key 'pattern': '{}' has no rows", path);
  return rows;
}

class DuoAttention final : public EvictionStage {
 public:
  explicit DuoAttention(const StageSpec& spec)
      : path_(spec.get("pattern")),
        sparsity_(spec.get_real("sparsity")),
        threshold_text_(spec.get("threshold")),
        sink_(spec.get_int("sink")),
        recent_(spec.get_int("recent")) {
    if (!path_.empty()) classify();  // a bad file fails when the stage is built, not mid-run
  }

  std::vector<std::uint8_t> select_layer(const CompressContext& ctx, int l) const override {
    const auto& s = ctx.cache.shape();
    check_shape(s);
    if (l < 0 || l >= s.layers) fail("duoattention: layer {} is outside 0..{}", l, s.layers - 1);
    const std::int64_t T = s.tokens, H = s.kv_heads;
    std::vector<std::uint8_t> mask(static_cast<std::size_t>(T * H));
    for (std::int64_t t = 0; t < T; ++t) {
      const bool window = t < sink_ || t >= T - recent_;  // sink + recent ≥ T: every token
      for (std::int64_t g = 0; g < H; ++g)
        mask[static_cast<std::size_t>(t * H + g)] = window || retrieval_[static_cast<std::size_t>(l * H + g)];
    }
    return mask;
  }

  nlohmann::json notes(const CacheShape& s) const override {
    check_shape(s);
    const std::int64_t T = s.tokens;
    nlohmann::json heads = nlohmann::json::array();
    std::int64_t n_retrieval = 0;
    for (int l = 0; l < s.layers; ++l)
      for (int g = 0; g < s.kv_heads; ++g)
        if (retrieval_[static_cast<std::size_t>(l * s.kv_heads + g)]) {
          heads.push_back({l, g});
          ++n_retrieval;
        }
    const std::int64_t n = std::int64_t{s.layers} * s.kv_heads;
    const std::int64_t streaming_kept = std::min(T, sink_ + recent_);
    const double kept = static_cast<double>(n_retrieval * T + (n - n_retrieval) * streaming_kept);
    const double head_sparsity = static_cast<double>(n - n_retrieval) / static_cast<double>(n);
    return {{"tokens", T},
            {"pattern", path_},
            {"rule", threshold_text_ == "none" ? "sparsity" : "threshold"},
            {"threshold", threshold_},
            {"sink", sink_},
            {"recent", recent_},
            {"retrieval_heads", heads},  // [layer, KV head] pairs that keep every token
            {"retrieval_count", n_retrieval},
            {"streaming_count", n - n_retrieval},
            {"head_sparsity", head_sparsity},  // the authors' "True Sparsity": fraction of streaming heads
            {"streaming_tokens_per_head", streaming_kept},
            {"kept_fraction", kept / static_cast<double>(n * T)},
            // kvpress DuoAttentionPress.compression_ratio_, its formula (negative when sink + recent > T)
            {"kvpress_compression_ratio", head_sparsity * (1 - static_cast<double>(sink_ + recent_) / static_cast<double>(T))}};
  }

 private:
  // The binary mask [L·H] (layer-major) from the pattern, as sparsify_attention_heads.
  void classify() {
    const auto rows = read_pattern(path_);
    layers_ = static_cast<int>(rows.size());
    heads_ = static_cast<int>(rows.front().size());
    std::vector<double> alpha;
    for (const auto& r : rows) alpha.insert(alpha.end(), r.begin(), r.end());
    const auto n = static_cast<std::int64_t>(alpha.size());
    retrieval_.assign(alpha.size(), 1);
    if (threshold_text_ != "none") {
      char* end = nullptr;
      threshold_ = std::strtod(threshold_text_.c_str(), &end);
      if (end != threshold_text_.c_str() + threshold_text_.size() || !std::isfinite(threshold_) || threshold_ < 0 ||
          threshold_ > 1)
        fail("duoattention: key 'threshold' = '{}' is not 'none' or a number in [0, 1]", threshold_text_);
      for (std::size_t i = 0; i < alpha.size(); ++i) retrieval_[i] = alpha[i] >= threshold_;
      return;
    }
    // How many stream: none at s ≤ 0, all at s ≥ 1 (the authors' thresholds −1 and 2), else the
    // count below the linear quantile at rank p = (N − 1)·s for distinct values: ceil(p). A p
    // within 1e-9 of an integer counts as that integer (numpy's interpolation weight there is a
    // rounding residue, and its threshold the value at that rank, which is not below itself).
    std::int64_t n_stream = 0;
    if (sparsity_ >= 1) {
      n_stream = n;
    } else if (sparsity_ > 0) {
      const double p = static_cast<double>(n - 1) * sparsity_;
      n_stream = std::abs(p - std::round(p)) < 1e-9 ? std::llround(p) : static_cast<std::int64_t>(std::ceil(p));
    }
    // The n_stream lowest values stream; ties to the lower (layer, head) first (a stable sort).
    std::vector<std::int64_t> order(alpha.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](std::int64_t a, std::int64_t b) { return alpha[a] < alpha[b]; });
    for (std::int64_t i = 0; i < n_stream; ++i) retrieval_[static_cast<std::size_t>(order[i])] = 0;
    // The threshold that reproduces the choice (for the notes): the lowest retrieval value.
    threshold_ = n_stream < n ? alpha[static_cast<std::size_t>(order[n_stream])] : 2.0;
  }

  void check_shape(const CacheShape& s) const {
    if (path_.empty()) read_pattern(path_);  // fails: the pattern is required
    if (layers_ != s.layers || heads_ != s.kv_heads)
      fail("duoattention: key 'pattern': '{}' has {} rows x {} values, but the cache has {} layers x {} KV heads", path_,
           layers_, heads_, s.layers, s.kv_heads);
  }

  std::string path_;
  double sparsity_;
  std::string threshold_text_;
  std::int64_t sink_, recent_;
  int layers_ = 0, heads_ = 0;
  double threshold_ = 0;
  std::vector<std::uint8_t> retrieval_;  // [L·H], layer-major: 1 = retrieval head
};

void check_threshold(StageSpec& spec, const std::vector<std::string>&) {
  const auto& text = spec.get("threshold");
  if (text == "none") return;
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (text.empty() || end != text.c_str() + text.size() || !std::isfinite(v) || v < 0 || v > 1)
    fail("spec 'duoattention': key 'threshold' = '{}' is not 'none' or a number in [0, 1]", text);
}

}  // namespace

MethodDef duoattention_method() {
  return eviction_method<DuoAttention>(
      {"duoattention", StageKind::eviction,
       "DuoAttention (docs/methods/duoattention.md; arXiv 2410.10819, mit-han-lab/duo-attention): retrieval heads keep "
       "every token, streaming heads the first sink and last recent; which heads retrieve comes from the authors' "
       "per-head pattern file (pattern=, required) made binary by sparsity or threshold. No keep/budget keys: the kept "
       "fraction follows from sparsity and sink + recent (kvpress DuoAttentionPress also refuses a compression ratio). "
       "Estimating a pattern from the model is not implemented.",
       {{"pattern", ParamType::text, "",
         "path of the authors' full_attention_heads.tsv (one row per layer, one value per KV head); required: no "
         "default and no estimate from the model yet (shown as auto: empty); the path may not contain , + : = [ ], so "
         "copy the file out of the authors' lr=... directories",
         {}},
        {"sparsity", ParamType::real, "0.5",
         "fraction of (layer, KV head) pairs made streaming: the lowest pattern values (authors' README and LongBench "
         "runs use 0, 0.5, 0.75)",
         {}, 0, 1},
        {"threshold", ParamType::text, "none",
         "none, or a value in [0, 1]: heads whose pattern value is >= it retrieve; replaces sparsity when set "
         "(the authors' --threshold)",
         {}},
        {"sink", ParamType::integer, "64", "first tokens a streaming head keeps (authors' README and scripts/longbench.sh: 64)", {}, 0, 1e15},
        {"recent", ParamType::integer, "256", "last tokens a streaming head keeps (authors' README and scripts/longbench.sh: 256); at least 1, so no head is empty", {}, 1, 1e15}},
       check_threshold});
}

}  // namespace kvlab::compressors
