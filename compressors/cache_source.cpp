#include "compressors/cache_source.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <numeric>
#include <span>

#include "core/error.h"

namespace kvlab::compressors {

std::string_view to_string(Part part) { return part == Part::key ? "key" : "value"; }

FloatTensor CacheSource::attn_in(int layer) const {
  fail("{}: layer {} has no attn_in (dump with --attn-in for weight-based methods such as commonkv)", describe(), layer);
}

namespace {

void check_layer(const CacheShape& s, int layer, const std::string& where) {
  if (layer < 0 || layer >= s.layers) fail("{}: layer {} outside [0, {})", where, layer, s.layers);
}

// rows × N values, row-major, into rows of `out` with stride ld.
void copy_rows(const float* from, std::int64_t rows, std::int64_t N, float* out, std::int64_t ld) {
  for (std::int64_t t = 0; t < rows; ++t) std::copy_n(from + t * N, N, out + t * ld);
}

}  // namespace

void CacheSource::check_row_stride(std::int64_t ld) const {
  if (ld < shape().width())
    fail("{}: row stride {} is narrower than a layer's row (H·D = {})", describe(), ld, shape().width());
}

void CacheSource::read_layer_into(int layer, Part part, float* out, std::int64_t ld) const {
  const auto& s = shape();
  check_row_stride(ld);
  const FloatTensor t = this->layer(layer, part);
  if (static_cast<std::int64_t>(t.data.size()) != s.tokens * s.width())
    fail("{}: layer {} {} has {} values, expected T·H·D = {}", describe(), layer, to_string(part), t.data.size(),
         s.tokens * s.width());
  copy_rows(t.data.data(), s.tokens, s.width(), out, ld);
}

namespace {

bool same_rope(const core::Rope& a, const core::Rope& b) {
  return a.inv_freq() == b.inv_freq() && a.head_dim() == b.head_dim() && a.attention_factor() == b.attention_factor() &&
         a.describe() == b.describe();
}

}  // namespace

const core::Rope& CacheSource::rope() const {
  const core::Rope& first = rope(0);
  for (int l = 1; l < shape().layers; ++l)
    if (!same_rope(rope(l), first))
      fail("{}: layers rotate with different RoPEs ({} on layer 0, {} on layer {}); use each layer's rope(layer)",
           describe(), first.describe(), rope(l).describe(), l);
  return first;
}

std::vector<core::Rope> layer_ropes(const CacheSource& cache) {
  std::vector<core::Rope> out;
  for (int l = 0; l < cache.shape().layers; ++l) out.push_back(cache.rope(l));
  return out;
}

std::string describe_ropes(const CacheSource& cache) {
  // Distinct RoPEs in order of first use, each with its runs of layers.
  std::vector<std::pair<const core::Rope*, std::vector<std::pair<int, int>>>> seen;
  for (int l = 0; l < cache.shape().layers; ++l) {
    const core::Rope& r = cache.rope(l);
    auto it = std::find_if(seen.begin(), seen.end(), [&](const auto& s) { return same_rope(*s.first, r); });
    if (it == seen.end()) it = seen.insert(seen.end(), {&r, {}});
    auto& runs = it->second;
    if (!runs.empty() && runs.back().second == l - 1) runs.back().second = l;
    else runs.emplace_back(l, l);
  }
  if (seen.size() <= 1) return seen.empty() ? "none" : seen.front().first->describe();
  std::vector<std::string> parts;
  for (const auto& [rope, runs] : seen) {
    std::vector<std::string> text;
    for (const auto& [a, b] : runs) text.push_back(a == b ? fmt::format("{}", a) : fmt::format("{}-{}", a, b));
    parts.push_back(fmt::format("{} (layers {})", rope->describe(), fmt::join(text, ", ")));
  }
  return fmt::format("{}", fmt::join(parts, "; "));
}

InMemoryCache::InMemoryCache(CacheShape shape, std::vector<FloatTensor> keys, std::vector<FloatTensor> values,
                             std::vector<FloatTensor> queries, std::vector<std::int64_t> positions, core::Rope rope,
                             std::vector<FloatTensor> attn_in)
    : shape_(shape), keys_(std::move(keys)), values_(std::move(values)), queries_(std::move(queries)),
      attn_in_(std::move(attn_in)), positions_(std::move(positions)), rope_(std::move(rope)) {
  const auto L = static_cast<std::size_t>(shape_.layers);
  if (keys_.size() != L || values_.size() != L || queries_.size() != L)
    fail("in-memory cache: need {} layers of keys, values and queries (got {}, {}, {})", L, keys_.size(),
         values_.size(), queries_.size());
  if (!attn_in_.empty() && attn_in_.size() != L) fail("in-memory cache: attn_in has {} layers, not {}", attn_in_.size(), L);
  const core::Shape kv{shape_.tokens, shape_.kv_heads, shape_.head_dim};
  const core::Shape q{shape_.query_window, shape_.q_heads, shape_.head_dim};
  for (std::size_t l = 0; l < L; ++l) {
    if (keys_[l].shape != kv || values_[l].shape != kv) fail("in-memory cache: layer {} key/value shape mismatch", l);
    if (queries_[l].shape != q) fail("in-memory cache: layer {} query shape mismatch", l);
  }
  if (shape_.kv_heads < 1 || shape_.q_heads % shape_.kv_heads)
    fail("in-memory cache: {} query heads is not a multiple of {} KV heads", shape_.q_heads, shape_.kv_heads);
  if (positions_.empty()) {
    positions_.resize(static_cast<std::size_t>(shape_.tokens));
    std::iota(positions_.begin(), positions_.end(), std::int64_t{0});
  }
  if (static_cast<std::int64_t>(positions_.size()) != shape_.tokens) fail("in-memory cache: {} positions for {} tokens", positions_.size(), shape_.tokens);
}

FloatTensor InMemoryCache::layer(int layer, Part part) const {
  check_layer(shape_, layer, describe());
  return part == Part::key ? keys_[layer] : values_[layer];
}

void InMemoryCache::read_layer_into(int layer, Part part, float* out, std::int64_t ld) const {
  check_layer(shape_, layer, describe());
  check_row_stride(ld);
  copy_rows((part == Part::key ? keys_[layer] : values_[layer]).data.data(), shape_.tokens, shape_.width(), out, ld);
}

const core::Rope& InMemoryCache::rope(int layer) const {
  check_layer(shape_, layer, describe());
  return layer_ropes_.empty() ? rope_ : layer_ropes_[static_cast<std::size_t>(layer)];
}

int InMemoryCache::window(int layer) const {
  check_layer(shape_, layer, describe());
  return windows_.empty() ? 0 : windows_[static_cast<std::size_t>(layer)];
}

InMemoryCache& InMemoryCache::with_layer_ropes(std::vector<core::Rope> ropes) {
  if (static_cast<int>(ropes.size()) != shape_.layers)
    fail("in-memory cache: {} layer RoPEs for {} layers", ropes.size(), shape_.layers);
  layer_ropes_ = std::move(ropes);
  return *this;
}

InMemoryCache& InMemoryCache::with_windows(std::vector<int> windows) {
  if (static_cast<int>(windows.size()) != shape_.layers)
    fail("in-memory cache: {} layer windows for {} layers", windows.size(), shape_.layers);
  for (int w : windows)
    if (w < 0) fail("in-memory cache: sliding window {} must be ≥ 0 (0 = full attention)", w);
  windows_ = std::move(windows);
  return *this;
}

FloatTensor InMemoryCache::queries(int layer) const {
  check_layer(shape_, layer, describe());
  return queries_[layer];
}

FloatTensor InMemoryCache::attn_in(int layer) const {
  if (attn_in_.empty()) return CacheSource::attn_in(layer);
  check_layer(shape_, layer, describe());
  return attn_in_[layer];
}

DumpCache::DumpCache(const core::DumpReader& dump, const std::string& sample_id)
    : dump_(dump), meta_(dump.sample(sample_id)) {
  const auto& info = dump.info();
  shape_.layers = info.num_layers;
  shape_.kv_heads = info.num_kv_heads;
  shape_.q_heads = info.num_q_heads;
  shape_.head_dim = info.head_dim;
  shape_.tokens = meta_.num_tokens;
  shape_.query_window = meta_.query_window;
  shape_.d_model = meta_.has_attn_in ? info.d_model : 0;
  if (shape_.q_heads % shape_.kv_heads)
    fail("{}: {} query heads is not a multiple of {} KV heads", describe(), shape_.q_heads, shape_.kv_heads);
  if (!info.layer_rope.empty() && info.layer_rope_configs.empty())
    fail("{}: the model rotates its layers with different RoPEs ({}) and the dump names them only in words (a dump "
         "from kvlab before issue 22, without layer_rope_config); dump it again to compress or score it",
         describe(), info.layer_rope);
  windows_ = info.layer_windows;
  try {
    // LongRoPE: the dump ran each sample as one forward (positions 0..T−1), whose table HF picks
    // by its largest position + 1 (docs/dump-format.md, docs/models.md §2.6).
    const std::int64_t seq_len = meta_.positions.empty()
                                     ? meta_.num_tokens
                                     : *std::max_element(meta_.positions.begin(), meta_.positions.end()) + 1;
    if (info.layer_rope_configs.empty()) {
      ropes_.assign(static_cast<std::size_t>(shape_.layers),
                    core::Rope::from_config(info.model_config, info.head_dim).for_length(seq_len));
    } else {
      for (const auto& config : info.layer_rope_configs)
        ropes_.push_back(core::Rope::from_config(config, info.head_dim).for_length(seq_len));
    }
  } catch (const Error& e) {
    fail("{}: {}", dump.path().string(), e.what());
  }
}

const core::Rope& DumpCache::rope(int layer) const {
  check_layer(shape_, layer, describe());
  return ropes_[static_cast<std::size_t>(layer)];
}

int DumpCache::window(int layer) const {
  check_layer(shape_, layer, describe());
  return windows_.empty() ? 0 : windows_[static_cast<std::size_t>(layer)];
}

std::string DumpCache::describe() const { return fmt::format("{} sample {}", dump_.path().string(), meta_.id); }

FloatTensor DumpCache::layer(int layer, Part part) const {
  check_layer(shape_, layer, describe());
  return dump_.read_layer(meta_.id, layer, part == Part::key ? core::KvKind::key : core::KvKind::value);
}

void DumpCache::read_layer_into(int layer, Part part, float* out, std::int64_t ld) const {
  check_layer(shape_, layer, describe());
  check_row_stride(ld);
  // Token blocks through one small buffer per thread: no whole-layer tensor (fresh pages to fault
  // in at every layer), and at most a block of each layer in memory.
  constexpr std::int64_t kBlockRows = 1024;
  const std::int64_t N = shape_.width();
  thread_local std::vector<float> block;
  block.resize(static_cast<std::size_t>(std::min(kBlockRows, shape_.tokens) * N));
  const auto kind = part == Part::key ? core::KvKind::key : core::KvKind::value;
  for (std::int64_t t0 = 0; t0 < shape_.tokens; t0 += kBlockRows) {
    const std::int64_t rows = std::min(kBlockRows, shape_.tokens - t0);
    const std::span<float> span(block.data(), static_cast<std::size_t>(rows * N));
    dump_.read_rows(meta_.id, layer, kind, t0, rows, span);
    copy_rows(span.data(), rows, N, out + t0 * ld, ld);
  }
}

FloatTensor DumpCache::queries(int layer) const {
  check_layer(shape_, layer, describe());
  return dump_.read_layer(meta_.id, layer, core::KvKind::query);
}

FloatTensor DumpCache::attn_in(int layer) const {
  if (!meta_.has_attn_in) return CacheSource::attn_in(layer);
  check_layer(shape_, layer, describe());
  return dump_.read_layer(meta_.id, layer, core::KvKind::attn_in);
}

}  // namespace kvlab::compressors
