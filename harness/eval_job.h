// `kvlab eval` as a library call: for every prompt, decode greedily with the uncompressed cache
// (the baseline) and with each compressor chain applied at the prefill hook, and report what
// needs no task: greedy-output agreement with the baseline and the KL of next-token
// distributions over the baseline's answer (teacher-forced), with bytes stored and ratios. These
// are meaningful even on tiny random models; end-task accuracy comes with the task generators.
// Torch-free header: the CLI compiles it without libtorch.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "harness/model_run_request.h"

namespace kvlab::harness {

struct EvalRequest : ModelRunRequest {
  std::filesystem::path prompts;        // JSONL prompts (harness/prompts.h), or
  // a generated task: "ruler:niah_single_1" … (datasets/ruler_tasks.h), sized with the model's
  // tokenizer to `length` tokens, `samples` of them from `seed`; predictions scored with the task's
  // metric (accuracy in [0, 1]) for the baseline and every method.
  std::string task;
  std::filesystem::path longbench;      // or a LongBench-format .jsonl (one dataset): middle-truncated
                                        // to `length` tokens, scored with that dataset's metric
  std::int64_t length = 4096;
  int samples = 20;
  std::uint64_t seed = 42;
  std::optional<double> depth_percent;  // niah tasks: every needle at this depth (percent); unset: RULER's random depths
  std::string scoring = "official";     // official (RULER/LongBench) | xkv (xKV's variant)
  std::filesystem::path words;          // RULER word list (default: wamerican's)
  std::filesystem::path essay;          // essay haystack text (tasks that use one)
  std::filesystem::path qa;             // SQuAD / HotpotQA JSON for qa_1 / qa_2
  std::vector<std::string> methods;     // compressor specs (each may sweep)
  // in-context: the question is prefilled with the context and compressed with it (SnapKV,
  // RULER-style); after-compression: only the context is compressed, the question is decoded
  // from the compressed cache (question-agnostic, as kvpress and prefix caching need).
  std::string question = "in-context";
  int max_new_tokens = 0;               // 0: the task's default, or 32 for prompts
  // 0: generated tokens (and a question fed after compression) are cached exactly, as the papers
  // do. N > 0: every N generated tokens the chain compresses the exact cache of everything so
  // far again (streaming compression of decode tokens, as KIVI and continuous eviction do).
  int recompress_every = 0;
  int query_window = 64;                // observation window handed to the compressors
  // Where the hook compresses (harness/compression_hook.h CompressRoute): auto keeps svd/xkv,
  // eviction and (on a GPU) KIVI, MiniCache and CommonKV on the model's tensors, resident does so on any device, host
  // sends every layer through host f32 (the route of every other chain).
  std::string compress_route = "auto";
  std::filesystem::path out;            // directory: eval.json, methods.csv, samples.csv
};

struct EvalOutcome {
  std::string summary;    // the table the CLI prints
  nlohmann::json report;  // what was written to eval.json
};
EvalOutcome run_eval(const EvalRequest& request);

}  // namespace kvlab::harness
