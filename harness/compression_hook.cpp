#include "harness/compression_hook.h"

#include "compressors/cache_source.h"
#include "compressors/chain.h"
#include "compressors/compressed.h"
#include "core/error.h"

namespace kvlab::harness {
namespace {

// A host f32 view of a FloatTensor's storage (valid while it lives).
at::Tensor view_of(const core::FloatTensor& t) {
  return at::from_blob(const_cast<float*>(t.data.data()), std::vector<std::int64_t>(t.shape.begin(), t.shape.end()),
                       at::kFloat);
}

// Any tensor → host f32 FloatTensor, row-major, in one copy (device, dtype and layout at once).
core::FloatTensor to_float_tensor(const at::Tensor& t) {
  core::FloatTensor out(core::Shape(t.sizes().begin(), t.sizes().end()));
  view_of(out).copy_(t);
  return out;
}

}  // namespace

ContextCapture::ContextCapture(int num_layers, int query_window, bool attn_in)
    : window_(query_window), attn_in_(attn_in), queries_(num_layers), attn_in_rows_(num_layers) {}

LayerObserver ContextCapture::observer() {
  return [this](const LayerTap& tap) {
    const std::int64_t S = tap.query.size(0), w = std::min<std::int64_t>(window_, S);
    at::Tensor& window = queries_.at(tap.layer);
    const auto latest = tap.query.narrow(0, S - w, w).to(at::kCPU, at::kFloat);
    window = window.defined() ? at::cat({window, latest}) : latest;
    window = window.narrow(0, window.size(0) - std::min<std::int64_t>(window_, window.size(0)),
                           std::min<std::int64_t>(window_, window.size(0))).contiguous();
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

CompressionResult compress_cache(KvCache& cache, const ContextCapture& capture, const ModelConfig& config,
                                 const compressors::ChainSpec& chain, const core::Checkpoint* checkpoint,
                                 linalg::Backend& backend, const ExactKv* exact) {
  const int L = config.num_layers;
  if (exact && exact->length() != cache.length())
    fail("compress: the exact copy holds {} tokens, the cache {} (catch_up first)", exact->length(), cache.length());
  compressors::CacheShape shape;
  shape.layers = L;
  shape.kv_heads = config.num_kv_heads;
  shape.q_heads = config.num_heads;
  shape.head_dim = config.head_dim;
  shape.tokens = cache.length();
  std::vector<core::FloatTensor> keys, values, queries, attn_in;
  for (int l = 0; l < L; ++l) {
    if (!capture.queries(l).defined()) fail("compress: layer {} has no captured queries (run the prefill observer)", l);
    keys.push_back(to_float_tensor((exact ? exact->key(l) : cache.key(l)).transpose(0, 1)));  // [T, H_kv, D]
    values.push_back(to_float_tensor((exact ? exact->value(l) : cache.value(l)).transpose(0, 1)));
    queries.push_back(to_float_tensor(capture.queries(l)));
    if (capture.attn_in(l).defined()) attn_in.push_back(to_float_tensor(capture.attn_in(l)));
  }
  shape.query_window = static_cast<int>(queries.front().shape[0]);
  shape.d_model = attn_in.empty() ? 0 : config.hidden_size;
  const auto positions_tensor = cache.positions().to(at::kCPU).contiguous();
  std::vector<std::int64_t> positions(positions_tensor.data_ptr<std::int64_t>(),
                                      positions_tensor.data_ptr<std::int64_t>() + positions_tensor.numel());
  const compressors::InMemoryCache source(shape, std::move(keys), std::move(values), std::move(queries),
                                          std::move(positions), config.rope, std::move(attn_in));
  const auto compressed = compressors::compress_chain({source, backend, checkpoint}, chain);
  for (int l = 0; l < L; ++l) {
    const auto kv = compressed->reconstruct(l);
    at::Tensor keep;
    if (!kv.kept.empty())  // [T, H_kv] → [H_kv, T], a view: replace() copies it
      keep = at::from_blob(const_cast<std::uint8_t*>(kv.kept.data()), {shape.tokens, shape.kv_heads}, at::kByte).t();
    // Views of the reconstruction: replace() copies them into the cache, converting dtype and device.
    cache.replace(l, view_of(kv.key).transpose(0, 1), view_of(kv.value).transpose(0, 1), keep);
  }
  return {compressed->bytes(), compressors::dense_fp16_bytes(shape)};
}

}  // namespace kvlab::harness
