#include "harness/paged_selection.h"

#include <limits>

#include "core/error.h"

namespace kvlab::harness {

PagedQuerySelection::PagedQuerySelection(compressors::PagedSelection rule, double cell_bytes, double meta_bytes)
    : rule_(rule), cell_bytes_(cell_bytes), meta_bytes_(meta_bytes) {
  if (rule_.page_size < 1 || rule_.page_budget < 1)
    fail("paged selection: page_size {} and page_budget {} must be ≥ 1", rule_.page_size, rule_.page_budget);
}

at::Tensor PagedQuerySelection::select(int layer, const at::Tensor& q, const at::Tensor& keys) {
  const std::int64_t Hkv = keys.size(0), S = keys.size(1), D = keys.size(2), Hq = q.size(0), P = rule_.page_size;
  if (q.dim() != 2 || q.size(1) != D || Hq % Hkv != 0)
    fail("paged selection: queries [{}, {}] do not match keys [{}, {}, {}]", Hq, q.size(-1), Hkv, S, D);
  const std::int64_t rep = Hq / Hkv, pages = (S + P - 1) / P;
  if (layer == 0) ++steps_;
  if (layer < rule_.skip_layers || pages <= rule_.page_budget) {
    loaded_ += static_cast<double>(S * Hkv) * cell_bytes_;
    return {};
  }
  // Each page's channel max and min, [H_kv, pages, D]: the keys padded to whole pages with −∞
  // (max) and +∞ (min), which no real key beats; then rounded to fp16 as the metadata is stored.
  const at::Tensor k = keys.to(at::kFloat);
  const auto pad = [&](double fill) {
    const std::int64_t extra = pages * P - S;
    const at::Tensor padded = extra ? at::cat({k, at::full({Hkv, extra, D}, fill, k.options())}, 1) : k;
    return padded.view({Hkv, pages, P, D});
  };
  const auto fp16 = [](const at::Tensor& x) { return x.to(at::kHalf).to(at::kFloat); };
  const at::Tensor page_max = fp16(std::get<0>(pad(-std::numeric_limits<double>::infinity()).max(2)));
  const at::Tensor page_min = fp16(std::get<0>(pad(std::numeric_limits<double>::infinity()).min(2)));
  // Bound of every page for every query head: q⁺·max + q⁻·min, [H_kv, rep, pages]. Query head
  // h reads KV head h / rep (repeat_interleave).
  const at::Tensor qf = q.to(at::kFloat).view({Hkv, rep, D});
  const at::Tensor bound = at::bmm(qf.clamp_min(0), page_max.transpose(1, 2)) + at::bmm(qf.clamp_max(0), page_min.transpose(1, 2));
  // The best page_budget − 1 pages before the current one; a stable descending sort puts the
  // earlier of two equal bounds first.
  const at::Tensor order = std::get<1>(at::sort(bound.narrow(2, 0, pages - 1), /*stable=*/true, /*dim=*/2, /*descending=*/true));
  at::Tensor chosen = at::zeros({Hkv, rep, pages}, k.options().dtype(at::kBool));
  chosen.scatter_(2, order.narrow(2, 0, rule_.page_budget - 1), true);
  chosen.narrow(2, pages - 1, 1).fill_(true);
  // What the step reads: per KV head, the union of its query heads' pages, once.
  at::Tensor page_cells = at::full({pages}, static_cast<double>(P), k.options().dtype(at::kDouble));
  page_cells[pages - 1].fill_(static_cast<double>(S - (pages - 1) * P));
  const at::Tensor cells = (chosen.any(1).to(at::kDouble) * page_cells).sum();
  loaded_cells_ = loaded_cells_.defined() ? loaded_cells_ + cells : cells;
  ranked_meta_ += static_cast<double>(Hkv * (pages - 1)) * meta_bytes_;
  return chosen.repeat_interleave(P, 2).narrow(2, 0, S).reshape({Hq, S});
}

double PagedQuerySelection::loaded_bytes_per_step() const {
  if (steps_ == 0) return 0.0;
  const double cells = loaded_cells_.defined() ? loaded_cells_.item<double>() : 0.0;
  return (loaded_ + cells * cell_bytes_ + ranked_meta_) / static_cast<double>(steps_);
}

}  // namespace kvlab::harness
