#include "harness/paged_selection.h"


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
  // Each page's channel max and min, [H_kv, pages, D], rounded to fp16 as the metadata is stored.
  // A complete page's keys no longer change (a compression makes a new selection), so its
  // metadata is computed once, when it fills, as the authors' append kernel does; only the
  // current partial page is taken again at each step.
  const auto fp16 = [](const at::Tensor& x) { return x.to(at::kHalf).to(at::kFloat); };
  if (static_cast<std::size_t>(layer) >= complete_max_.size()) {
    complete_max_.resize(static_cast<std::size_t>(layer) + 1);
    complete_min_.resize(static_cast<std::size_t>(layer) + 1);
  }
  at::Tensor& done_max = complete_max_[static_cast<std::size_t>(layer)];
  at::Tensor& done_min = complete_min_[static_cast<std::size_t>(layer)];
  const std::int64_t complete = S / P, done = done_max.defined() ? done_max.size(1) : 0;
  if (done > complete) fail("paged selection: layer {} shrank from {} pages to {}", layer, done, complete);
  if (done < complete) {
    const at::Tensor fresh = keys.narrow(1, done * P, (complete - done) * P).to(at::kFloat).view({Hkv, complete - done, P, D});
    const at::Tensor mx = fp16(std::get<0>(fresh.max(2))), mn = fp16(std::get<0>(fresh.min(2)));
    done_max = done ? at::cat({done_max, mx}, 1) : mx;
    done_min = done ? at::cat({done_min, mn}, 1) : mn;
  }
  at::Tensor page_max = done_max, page_min = done_min;
  if (complete < pages) {  // the current page, partial
    const at::Tensor current = keys.narrow(1, complete * P, S - complete * P).to(at::kFloat);
    const at::Tensor mx = fp16(std::get<0>(current.max(1, true))), mn = fp16(std::get<0>(current.min(1, true)));
    page_max = complete ? at::cat({done_max, mx}, 1) : mx;
    page_min = complete ? at::cat({done_min, mn}, 1) : mn;
  }
  // Bound of every page for every query head: q⁺·max + q⁻·min, [H_kv, rep, pages]. Query head
  // h reads KV head h / rep (repeat_interleave).
  const at::Tensor qf = q.to(at::kFloat).view({Hkv, rep, D});
  const at::Tensor bound = at::bmm(qf.clamp_min(0), page_max.transpose(1, 2)) + at::bmm(qf.clamp_max(0), page_min.transpose(1, 2));
  // The best page_budget − 1 pages before the current one; a stable descending sort puts the
  // earlier of two equal bounds first.
  const at::Tensor order = std::get<1>(at::sort(bound.narrow(2, 0, pages - 1), /*stable=*/true, /*dim=*/2, /*descending=*/true));
  at::Tensor chosen = at::zeros({Hkv, rep, pages}, keys.options().dtype(at::kBool));
  chosen.scatter_(2, order.narrow(2, 0, rule_.page_budget - 1), true);
  chosen.narrow(2, pages - 1, 1).fill_(true);
  // What the step reads: per KV head, the union of its query heads' pages, once.
  at::Tensor page_cells = at::full({pages}, static_cast<double>(P), keys.options().dtype(at::kDouble));
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
