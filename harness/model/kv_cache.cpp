#include "harness/model/kv_cache.h"

#include <fmt/format.h>

#include <algorithm>

#include "core/error.h"

namespace kvlab::harness {
namespace {

std::string shape_of(const at::Tensor& t) {
  std::string s = "[";
  for (std::int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + "]";
}

// The capacity a buffer holding `capacity` tokens (0: none yet) needs for `needed`: at least
// the reserve hint; a full buffer grows by a quarter (geometric, so appending one token at a
// time stays amortised O(1), with a peak of 2.25 rather than 3 buffers while copying).
std::int64_t grown_capacity(std::int64_t capacity, std::int64_t needed, std::int64_t hint) {
  return std::max({needed, hint, capacity ? capacity + capacity / 4 + 64 : needed});
}

// Grows a [H, capacity, D] buffer so `needed` tokens fit, keeping its first `length` tokens.
void ensure_capacity(at::Tensor& buffer, std::int64_t length, std::int64_t needed, std::int64_t hint, const at::Tensor& like) {
  if (buffer.defined() && buffer.size(1) >= needed) return;
  const std::int64_t capacity = grown_capacity(buffer.defined() ? buffer.size(1) : 0, needed, hint);
  at::Tensor grown = at::empty({like.size(0), capacity, like.size(2)}, like.options());
  if (length) grown.narrow(1, 0, length).copy_(buffer.narrow(1, 0, length));
  buffer = grown;
}

}  // namespace

KvCache::KvCache(int num_layers) : layers_(num_layers) {
  if (num_layers <= 0) fail("KV cache: {} layers", num_layers);
}

const KvCache::Layer& KvCache::layer_at(int l) const {
  if (l < 0 || l >= num_layers()) fail("KV cache: layer {} is outside 0..{}", l, num_layers() - 1);
  return layers_[l];
}
KvCache::Layer& KvCache::layer_at(int l) { return const_cast<Layer&>(std::as_const(*this).layer_at(l)); }

const at::Tensor& KvCache::key(int l) const { return layer_at(l).key_view; }
const at::Tensor& KvCache::rotated_key(int l) const { return layer_at(l).rotated_view; }
const at::Tensor& KvCache::value(int l) const { return layer_at(l).value_view; }
const at::Tensor& KvCache::keep(int l) const { return layer_at(l).keep; }

KvCache KvCache::clone() const {
  // Only the filled part of each buffer is copied; the reserved tail stays uninitialised.
  const auto copy_filled = [](const at::Tensor& buffer, std::int64_t dim, std::int64_t length) {
    at::Tensor out = at::empty_like(buffer);
    if (length) out.narrow(dim, 0, length).copy_(buffer.narrow(dim, 0, length));
    return out;
  };
  KvCache out(num_layers());
  out.length_ = length_;
  out.next_position_ = next_position_;
  out.reserve_ = reserve_;
  out.selection_ = selection_;
  if (positions_.defined()) {
    out.positions_ = copy_filled(positions_, 0, length_);
    out.positions_view_ = out.positions_.narrow(0, 0, length_);
  }
  for (int l = 0; l < num_layers(); ++l) {
    const Layer& from = layers_[l];
    Layer& to = out.layers_[l];
    to.length = from.length;
    to.stale = from.stale;
    if (from.key.defined()) {
      to.key = copy_filled(from.key, 1, from.length);
      to.rotated = copy_filled(from.rotated, 1, from.length);
      to.value = copy_filled(from.value, 1, from.length);
      to.key_view = to.key.narrow(1, 0, from.length);
      to.rotated_view = to.rotated.narrow(1, 0, from.length);
      to.value_view = to.value.narrow(1, 0, from.length);
    }
    if (from.keep.defined()) to.keep = from.keep.clone();
  }
  return out;
}

void KvCache::append(int l, const at::Tensor& key, const at::Tensor& rotated_key, const at::Tensor& value) {
  Layer& layer = layer_at(l);
  const std::int64_t n = key.size(0), end = layer.length + n;
  ensure_capacity(layer.key, layer.length, end, reserve_, key.transpose(0, 1));
  ensure_capacity(layer.rotated, layer.length, end, reserve_, key.transpose(0, 1));
  ensure_capacity(layer.value, layer.length, end, reserve_, value.transpose(0, 1));
  layer.key.narrow(1, layer.length, n).copy_(key.transpose(0, 1));
  layer.rotated.narrow(1, layer.length, n).copy_(rotated_key.transpose(0, 1));
  layer.value.narrow(1, layer.length, n).copy_(value.transpose(0, 1));
  if (layer.keep.defined())  // new tokens are always attended
    layer.keep = at::cat({layer.keep, at::ones({layer.keep.size(0), n}, layer.keep.options())}, 1);
  layer.length = end;
  layer.key_view = layer.key.narrow(1, 0, end);
  layer.rotated_view = layer.rotated.narrow(1, 0, end);
  layer.value_view = layer.value.narrow(1, 0, end);
}

void KvCache::append_positions(const at::Tensor& positions) {
  const std::int64_t n = positions.size(0), end = length_ + n;
  for (int l = 0; l < num_layers(); ++l)
    if (layers_[l].length != end) fail("KV cache: layer {} holds {} tokens, expected {}", l, layers_[l].length, end);
  if (!positions_.defined() || positions_.size(0) < end) {
    at::Tensor grown =
        at::empty({grown_capacity(positions_.defined() ? positions_.size(0) : 0, end, reserve_)}, positions.options());
    if (length_) grown.narrow(0, 0, length_).copy_(positions_.narrow(0, 0, length_));
    positions_ = grown;
  }
  positions_.narrow(0, length_, n).copy_(positions);
  length_ = end;
  positions_view_ = positions_.narrow(0, 0, end);
  next_position_ = positions_view_.max().item<std::int64_t>() + 1;
}

void KvCache::truncate(std::int64_t length) {
  if (length < 0 || length > length_) fail("KV cache: cannot truncate {} tokens to {}", length_, length);
  for (auto& layer : layers_) {
    layer.length = length;
    if (layer.key.defined()) {
      layer.key_view = layer.key.narrow(1, 0, length);
      layer.rotated_view = layer.rotated.narrow(1, 0, length);
      layer.value_view = layer.value.narrow(1, 0, length);
    }
    if (layer.keep.defined()) layer.keep = layer.keep.narrow(1, 0, length).contiguous();
  }
  length_ = length;
  if (positions_.defined()) positions_view_ = positions_.narrow(0, 0, length);
  next_position_ = length ? positions_view_.max().item<std::int64_t>() + 1 : 0;
}

void KvCache::replace(int l, const at::Tensor& key, const at::Tensor& value, const at::Tensor& keep) {
  Layer& layer = layer_at(l);
  if (!layer.key_view.defined()) fail("KV cache: layer {} is empty; replace() follows a prefill", l);
  const auto& now = layer.key_view;
  if (!key.sizes().equals(now.sizes()) || !value.sizes().equals(now.sizes()))
    fail("KV cache: layer {}: replacement key {} / value {} must have the cached shape {}", l, shape_of(key),
         shape_of(value), shape_of(now));
  if (keep.defined() && (keep.dim() != 2 || keep.size(0) == 0 || keep.size(0) % now.size(0) != 0 ||
                        keep.size(1) != now.size(1)))
    fail("KV cache: layer {}: keep mask {} must be [H_kv, S] = [{}, {}] or one row per query head (a multiple of {} "
         "rows)",
         l, shape_of(keep), now.size(0), now.size(1), now.size(0));
  layer.key_view.copy_(key);
  layer.value_view.copy_(value);
  // One owned, contiguous copy whatever the caller passed (a view, another dtype or device).
  layer.keep = keep.defined()
                   ? keep.to(now.device(), at::kBool, /*non_blocking=*/false, /*copy=*/true, at::MemoryFormat::Contiguous)
                   : at::Tensor();
  layer.stale = true;
}

void KvCache::set_rotated(int l, const at::Tensor& rotated_key) {
  Layer& layer = layer_at(l);
  layer.rotated_view.copy_(rotated_key);
  layer.stale = false;
}

}  // namespace kvlab::harness
