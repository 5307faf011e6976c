#include "harness/compression_hook.h"

#include <algorithm>

#include "compressors/chain.h"
#include "compressors/compressed.h"
#include "core/error.h"
#include "core/profile.h"
#include "harness/kv_cache_source.h"
#include "harness/resident_routes.h"

namespace kvlab::harness {

ContextCapture::ContextCapture(int num_layers, int query_window, bool attn_in)
    : window_(query_window), attn_in_(attn_in), queries_(num_layers), attn_in_rows_(num_layers) {}

LayerObserver ContextCapture::observer() {
  return [this](const LayerTap& tap) {
    const std::int64_t S = tap.query.size(0), w = std::min<std::int64_t>(window_, S);
    at::Tensor& window = queries_.at(tap.layer);
    const auto latest = tap.query.narrow(0, S - w, w).to(at::kCPU, at::kFloat);
    window = window.defined() ? at::cat({window, latest}) : latest;
    const std::int64_t kept = std::min<std::int64_t>(window_, window.size(0));  // the last W rows
    window = window.narrow(0, window.size(0) - kept, kept).contiguous();
    if (attn_in_) {
      at::Tensor& rows = attn_in_rows_.at(tap.layer);
      const auto more = tap.attn_in.to(at::kCPU, at::kFloat);
      rows = rows.defined() ? at::cat({rows, more}) : more.contiguous();
    }
  };
}

void ExactKv::catch_up(const KvCache& cache) {
  const std::int64_t n = cache.length() - length_;
  if (n < 0) fail("exact KV copy: the cache shrank from {} to {} tokens", length_, cache.length());
  if (keys_.empty()) keys_.resize(cache.num_layers()), values_.resize(cache.num_layers());
  for (int l = 0; l < cache.num_layers(); ++l) {
    const auto k = cache.key(l).narrow(1, length_, n), v = cache.value(l).narrow(1, length_, n);
    keys_[l] = keys_[l].defined() ? at::cat({keys_[l], k}, 1) : k.clone();
    values_[l] = values_[l].defined() ? at::cat({values_[l], v}, 1) : v.clone();
  }
  length_ = cache.length();
}

const at::Tensor& ContextCapture::queries(int layer) const { return queries_.at(layer); }
const at::Tensor& ContextCapture::attn_in(int layer) const { return attn_in_rows_.at(layer); }

namespace {

// Writes a rebuilt layer into the cache (pre-RoPE keys, values, the cells kept: per KV head, or,
// with `per_query_head`, per query head — LayerKV::query_kept [W, H_q, T], the same for every
// window row there, so its first row is each query head's mask). A per-query rule's query_kept
// (quest: each window query's own pages) is not a cache mask: the model applies the rule itself.
void write_back(KvCache& cache, int layer, const compressors::LayerKV& kv, const compressors::CacheShape& shape,
                bool per_query_head) {
  const core::ProfileScope scope("compress hook: write back");
  at::Tensor keep;
  if (per_query_head)
    keep = at::from_blob(const_cast<std::uint8_t*>(kv.query_kept.data()), {shape.q_heads, shape.tokens}, at::kByte);
  else if (!kv.kept.empty())
    keep = keep_view(kv.kept, shape.tokens, shape.kv_heads);
  // Views of the reconstruction: replace() copies them into the cache, converting dtype and device.
  cache.replace(layer, host_view(kv.key).transpose(0, 1), host_view(kv.value).transpose(0, 1), keep);
}

// The decode-time selection of a chain whose transform selects per decode query (quest), for the
// cache just compressed (its page budget is fixed by the tokens compressed); null otherwise.
// What a step reads is counted at the stored form's bytes per cell: the stored bytes less the
// page metadata (fp16 max and min of each channel, per page and KV head) over the cells.
std::shared_ptr<PagedQuerySelection> paged_selection_of(const compressors::ChainSpec& chain,
                                                        const compressors::CacheShape& shape, std::int64_t bytes) {
  for (const auto& stage : chain.stages) {
    const auto& def = compressors::method(stage.method);
    if (!def.per_query()) continue;
    const auto rule = def.paged_selection(stage, shape.tokens);
    const double meta_bytes = 2.0 * 2.0 * shape.head_dim;  // one page, one KV head
    const double pages = static_cast<double>((shape.tokens + rule.page_size - 1) / rule.page_size);
    const double cells = static_cast<double>(shape.layers) * shape.kv_heads * static_cast<double>(shape.tokens);
    const double meta = static_cast<double>(shape.layers) * shape.kv_heads * pages * meta_bytes;
    return std::make_shared<PagedQuerySelection>(rule, (static_cast<double>(bytes) - meta) / cells, meta_bytes);
  }
  return nullptr;
}

}  // namespace

CompressionResult compress_cache(KvCache& cache, const ContextCapture& capture, const ModelConfig& model_config,
                                 const compressors::ChainSpec& chain, const core::Checkpoint* checkpoint,
                                 linalg::Backend& backend, const ExactKv* exact, CompressRoute route,
                                 const compressors::LiveModel* live) {
  const core::ProfileScope scope("compress hook (whole chain)");
  cache.set_query_selection(nullptr);  // a selection of an earlier compression no longer applies
  // LongRoPE: the compressors rotate the cache with the table of the forward that filled it up to
  // next_position() (the prefill's, when the hook runs after it; docs/models.md §2.6).
  ModelConfig config = model_config;
  config.rope = model_config.rope.for_length(cache.next_position());
  if (model_config.local_rope) config.local_rope = model_config.local_rope->for_length(cache.next_position());
  if (exact && exact->length() != cache.length())
    fail("compress: the exact copy holds {} tokens, the cache {} (catch_up first)", exact->length(), cache.length());
  if (const auto resident = resident_route(cache, config, chain, backend, route); resident != ResidentRoute::none) {
    // Compressing again during decoding: from the exact tokens, which the cache takes back first.
    if (exact)
      for (int l = 0; l < cache.num_layers(); ++l) cache.replace(l, exact->key(l), exact->value(l));
    if (auto result = compress_in_place(resident, cache, capture, config, chain, checkpoint, backend)) return *result;
  }
  const KvCacheSource source(cache, exact, capture, config);
  const auto& shape = source.shape();
  const compressors::CompressContext ctx{source, backend, checkpoint, live};
  std::int64_t bytes = 0;
  const bool per_query_head = std::any_of(chain.stages.begin(), chain.stages.end(), compressors::selects_per_query_head);
  if (compressors::layer_local(chain)) {
    // Each layer reads only itself, so writing it back right away cannot change what a later
    // layer's compression sees.
    compressors::compress_by_layer(ctx, chain, [&](int l, const compressors::CacheSource&, compressors::Compressed& c) {
      write_back(cache, l, c.reconstruct(0), shape, per_query_head);
      bytes += c.bytes();
    });
  } else {
    const auto compressed = compressors::compress_chain(ctx, chain);  // reads every layer before any write-back
    for (int l = 0; l < shape.layers; ++l) write_back(cache, l, compressed->reconstruct(l), shape, per_query_head);
    bytes = compressed->bytes();
  }
  CompressionResult result{bytes, compressors::dense_fp16_bytes(shape), "host", nullptr};
  result.paged = paged_selection_of(chain, shape, bytes);
  cache.set_query_selection(result.paged);
  return result;
}

CompressRoute parse_compress_route(std::string_view name) {
  if (name == "auto") return CompressRoute::automatic;
  if (name == "host") return CompressRoute::host;
  if (name == "resident") return CompressRoute::resident;
  fail("compress route '{}': expected auto (what is faster where the model runs), resident (every chain that can "
       "stays on the model's tensors) or host (every chain through host f32)",
       name);
}

}  // namespace kvlab::harness
