// Dumping a model's KV cache to the HDF5 format of core/kv_dump.h while the prefill runs:
// each layer's pre-RoPE keys, values, the last W queries (and optionally the normalized
// attention input) go to disk as soon as the layer is computed, and no cache is kept, so memory
// stays bounded by one layer's tensors plus the model.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/kv_dump.h"
#include "harness/model/llama_model.h"

namespace kvlab::harness {

struct SampleToDump {
  std::string id;
  std::vector<std::int32_t> tokens;  // [T]
  std::int64_t context_end = 0;      // tokens [0, context_end) are the context
};

// The DumpInfo for `model`'s config with provenance filled (model id, config.json, tokenizer
// and template descriptions; the writer adds version, revision and time).
core::DumpInfo dump_info_for(const LlamaModel& model, std::string model_id, std::string tokenizer,
                             std::string chat_template, core::DType storage, bool attn_in);

// Runs one sample's prefill and writes its layers. query_window is clamped to T; returns W used.
int dump_sample(const LlamaModel& model, const SampleToDump& sample, int query_window, bool attn_in,
                core::DumpWriter& writer);

}  // namespace kvlab::harness
