// libFuzzer target: generation_config.json beside a fixed, valid config.json, read with
// harness::load_model_config (the only reader of generation_config.json; it takes a folder).
#include <cstdint>

#include "fuzz/fuzz_common.h"
#include "harness/model_config.h"

namespace {

// A small Llama-3-style config.json (as kvlab make-tiny-model writes them).
constexpr char kConfig[] = R"({
  "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 512,
  "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
  "num_key_value_heads": 2, "head_dim": 16, "rms_norm_eps": 1e-05, "max_position_embeddings": 2048,
  "bos_token_id": 1, "eos_token_id": [2, 3], "torch_dtype": "float32", "tie_word_embeddings": false,
  "rope_theta": 500000.0,
  "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 8192}
})";

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const bool written = (kvlab_fuzz::scratch().write("config.json", kConfig), true);
  (void)written;
  kvlab_fuzz::scratch().write("generation_config.json", kvlab_fuzz::bytes(data, size));
  kvlab_fuzz::run([&] { (void)kvlab::harness::load_model_config(kvlab_fuzz::scratch().path()); });
  return 0;
}
