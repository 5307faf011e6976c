// KVzip's pieces that kvzip_test.cpp checks against the authors' code (docs/methods/kvzip.md).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace kvlab::compressors {

// One reconstruction probe: the model, given the whole cache, is asked to repeat the cached
// tokens [begin, end) and is teacher-forced on them.
struct KvzipProbe {
  std::int64_t begin = 0, end = 0;   // the cached tokens this probe repeats
  std::vector<std::int32_t> tokens;  // repeat prompt, answer start, then cached[begin, end)
};

// The authors' chunked repeat prompts (snu-mllab/KVzip model/wrapper.py `self_task`): the
// tokens [sink, T) of `cached` in chunks of `chunk` (the last may be shorter); the first chunk
// is asked for with `first`, each later one with `later` followed by the previous chunk's last
// `tail` tokens; then `answer_start` and the chunk itself. Empty when sink ≥ T.
std::vector<KvzipProbe> kvzip_probes(std::span<const std::int32_t> cached, std::int64_t sink, std::int64_t chunk,
                                     int tail, std::span<const std::int32_t> first,
                                     std::span<const std::int32_t> later, std::span<const std::int32_t> answer_start);

// One layer of one probe (attention/score.py `_get_score`): for every KV head g and cached token
// t in [begin, end), scores[g·T + t] = the largest attention weight t receives from any of the
// probe's n queries of g's group, each query's softmax(q·k/√D) taken over the sink keys
// [0, sink), the repeated chunk's keys [begin, end) and the probe's own keys up to itself
// (causal), and nothing else. Every key and query is already rotated: cache_keys [T, H_kv, D]
// (only rows [0, sink) and [begin, end) are read), probe_queries [n, H_q, D], probe_keys
// [n, H_kv, D]; query head h reads KV head h / (H_q/H_kv). Other entries of scores are left.
void kvzip_probe_scores(const float* cache_keys, std::int64_t T, const float* probe_queries, const float* probe_keys,
                        std::int64_t n, int q_heads, int kv_heads, int head_dim, std::int64_t sink,
                        std::int64_t begin, std::int64_t end, std::vector<double>& scores);

}  // namespace kvlab::compressors
