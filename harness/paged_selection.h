// Quest's page selection at every decode step of the model (docs/methods/quest.md §4): the rule
// a per-query method's registry entry gives (compressors::PagedSelection) applied to each
// single-token step's rotated queries against the cache's rotated keys, on the keys' device.
// compressors/methods/quest.cpp applies the same rule to a dump's window queries; this is its
// decode-time side, so `eval` decodes from what Quest attends.
//
// Per layer at or above skip_layers whose cache spans more pages than the budget: each page's
// channel-wise max and min of the keys (rounded to fp16, the authors' metadata cache), each query
// head's bound Σ_c max(q_c·min_c, q_c·max_c) = q⁺·max + q⁻·min per page, and the current page plus
// the page_budget − 1 earlier pages of highest bound attended (equal bounds: the earlier page, as
// the dump path ranks them). Tokens generated after the compression join the pages as they come,
// as the authors' metadata cache grows with decoding.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "compressors/spec.h"
#include "harness/model/kv_cache.h"

namespace kvlab::harness {

class PagedQuerySelection final : public QuerySelection {
 public:
  // cell_bytes: what one cell (a token's key and value in one KV head) is stored in; meta_bytes:
  // one page's metadata for one KV head. Both only feed loaded_bytes_per_step.
  PagedQuerySelection(compressors::PagedSelection rule, double cell_bytes, double meta_bytes);
  // q [H_q, D] rotated, keys [H_kv, S, D] rotated; [H_q, S] bool, or undefined where every cell
  // is attended (a skipped layer, or no more pages than the budget).
  at::Tensor select(int layer, const at::Tensor& q, const at::Tensor& keys) override;
  // Bytes one step reads, summed over layers, mean over the steps so far (0 before any): per KV
  // head the union of its query heads' pages' cells, plus the metadata of the pages ranked.
  double loaded_bytes_per_step() const;

 private:
  compressors::PagedSelection rule_;
  double cell_bytes_, meta_bytes_;
  std::int64_t steps_ = 0;
  double loaded_ = 0;      // what the steps read where every cell is attended (host arithmetic)
  at::Tensor loaded_cells_;  // cells read in ranked layers, on the keys' device (no host sync per step)
  double ranked_meta_ = 0;   // metadata bytes of the ranked layers' pages
  // Per layer, the complete pages' metadata [H_kv, pages, D] (f32 holding fp16 values), kept
  // from step to step.
  std::vector<at::Tensor> complete_max_, complete_min_;
};

}  // namespace kvlab::harness
