// think: query-driven pruning of key channels (docs/methods/think.md). Xu et al., "ThinK: Thinner
// Key Cache by Query-Driven Pruning", ICLR 2025, arXiv 2407.21018; authors' code
// SalesforceAIResearch/ThinK ThinK_flash/src/kv_pruning_utils.py (key_pruner_query_driven), and
// kvpress kvpress/presses/think_press.py.
//
// A quantizer-kind stage that runs on the per-head keys a chain stores densely (`full`, or the
// cells an eviction keeps: dense.h's "layer{l}/head{h}/key", post-RoPE [n, D]), so
// `snapkv:…+think:…+kivi:…` prunes the kept cells' key channels and KIVI then quantizes what is
// left. Per (layer, KV head) every channel c gets
//   score_c = mean_{g in the GQA group} mean_{last w window rows} q_c²  ·  mean_{n stored rows} k_c²
// (queries and keys post-RoPE, as the authors and kvpress score them), and the int(D·ratio) lowest
// scores are pruned from every stored row but the last `recent` ones. Stored per head: the kept
// channels of the older rows at 16 bits [n − r, D − P], the r = min(recent, n) recent rows whole
// [r, D], and the kept channels as a D-bit mask (⌈D/8⌉ bytes). Values are stored as before.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "compressors/compressor.h"

namespace kvlab::compressors {

MethodDef think_method();

struct ThinkParams {
  double ratio = 0.4;        // λ, fraction of a head's D key channels pruned: P = int(D·λ)
  std::int64_t window = 32;  // w, window queries that score the channels (the last w of the dump's W; w > W fails)
  std::int64_t recent = 32;  // r, most recent stored rows of each head kept whole
};
ThinkParams think_params(const StageSpec& spec);

// One KV head's channel scores [D] (double): `queries` [w, G, D] are the group's post-RoPE window
// queries, `keys` [n, D] its stored post-RoPE keys. Means in index order; n = 0 gives zeros.
std::vector<double> think_channel_scores(std::span<const float> queries, std::int64_t w, int group,
                                         std::span<const float> keys, std::int64_t n, int head_dim);

// The channels kept, ascending: all but the int(D·ratio) lowest scores; among equal scores the
// lower channel is pruned first (torch.topk leaves their order unspecified).
std::vector<int> think_kept_channels(const std::vector<double>& scores, double ratio);

// Bytes one head's keys take once pruned: 2·(n − r)·(D − P) + 2·r·D + ⌈D/8⌉, r = min(recent, n).
std::int64_t think_head_key_bytes(std::int64_t n, int head_dim, const ThinkParams& p);

}  // namespace kvlab::compressors
