// minicache: SLERP merging of adjacent layer pairs (docs/methods/minicache.md).
//
// Pairs (start, start+1), (start+2, start+3), … inside [start, end] (default L/2 … L−1, the
// paper's "from the middle layer"). For every (token, KV head) row of length D of a pair, keys
// pre-RoPE as in xKV's re-implementation, the two layers' rows x1 (earlier) and x2 (later) are
// split into magnitudes and unit directions; Ω is their angle; rows on the retained side of
// threshold = min Ω + γ·(max Ω − min Ω) keep both original vectors, all others store one SLERP
// direction e plus both magnitudes and are restored as e·‖x1‖ and e·‖x2‖.
//
// Keys (all with the paper's or xKV's value as default):
//   t       SLERP weight of the later layer, [0, 1]; paper 0.6 (xKV's code: 0.5)
//   gamma   retention threshold fraction of the Ω range, [0, 1]; 0.05 (with retain=top: the
//           fraction of each head's T tokens kept, ⌈γ·T⌉)
//   start   first layer of the first pair; -1 = L/2
//   end     last layer a pair may use; -1 = L−1
//   retain  below = keep rows with Ω ≤ threshold (xKV / CommonKV code); above = keep Ω > threshold
//           (the abstract's "keep highly distinct pairs unmerged", xKV's threshold mirrored);
//           top = keep the ⌈γ·T⌉ rows of largest Ω per KV head, ties to the earlier token
//           (KVCache-Factory pyramidkv/minicache.py); docs/methods/minicache.md §2
//   scope   global = threshold min/max over all heads and tokens of the pair (xKV); head = per KV
//           head; retain=top always ranks per KV head
//   part    both | key | value: which part is merged (the other is stored dense)
#pragma once

#include <span>
#include <string_view>
#include <vector>

#include "compressors/compressor.h"

namespace kvlab::compressors {

MethodDef minicache_method();
std::unique_ptr<TransformStage> make_minicache(const StageSpec& spec);

// The SLERP merge of one row pair (docs/methods/minicache.md §1–3).
struct SlerpRow {
  std::vector<float> direction;  // [D] the merged unit direction e (all zero when both rows are zero)
  double omega = 0;              // angle between x1 and x2, radians in [0, π]; 0 when degenerate
  double norm1 = 0, norm2 = 0;   // ‖x1‖, ‖x2‖ (same units as the rows)
  bool degenerate = false;       // a row has zero norm: Ω is undefined and the row pair takes no part
                                 // in the threshold; e is the other row's direction, so e·‖x‖
                                 // restores both rows (the zero one exactly)
};
// x1: [D] row of the earlier layer, x2: [D] row of the later layer; t ∈ [0, 1] weights x2
// (t = 0 gives x1's direction, t = 1 gives x2's).
SlerpRow slerp_rows(std::span<const float> x1, std::span<const float> x2, double t);

// The first layer of every pair merged in an L-layer cache: (start, start+1), (start+2, start+3),
// … within [start, end], with start = -1 meaning L/2 and end = -1 meaning L−1 (the spec's keys
// as written). Fails naming the key when either lies beyond the last layer or start leaves no
// pair; `where` names the cache in messages.
std::vector<int> minicache_pairs(std::int64_t start, std::int64_t end, int layers, std::string_view where);

}  // namespace kvlab::compressors
