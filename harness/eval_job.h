// `kvlab eval` as a library call: for every prompt, decode greedily with the uncompressed cache
// (the baseline) and with each compressor chain applied at the prefill hook, and report what
// needs no task: greedy-output agreement with the baseline and the KL of next-token
// distributions over the baseline's answer (teacher-forced), with bytes stored and ratios. These
// are meaningful even on tiny random models; end-task accuracy comes with the task generators.
// Torch-free header: the CLI compiles it without libtorch.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace kvlab::harness {

struct EvalRequest {
  std::filesystem::path model;
  std::filesystem::path prompts;        // JSONL prompts (harness/prompts.h)
  std::vector<std::string> methods;     // compressor specs (each may sweep)
  std::string chat_template = "auto";
  std::int64_t max_tokens = 0;          // context budget per prompt (0: none)
  std::string truncate = "end";
  // in-context: the question is prefilled with the context and compressed with it (SnapKV,
  // RULER-style); after-compression: only the context is compressed, the question is decoded
  // from the compressed cache (question-agnostic, as kvpress and prefix caching need).
  std::string question = "in-context";
  int max_new_tokens = 32;
  int query_window = 64;                // observation window handed to the compressors
  std::string device = "auto";
  std::string model_dtype = "auto";
  int threads = 0;
  int limit = 0;
  std::filesystem::path out;            // directory: eval.json, methods.csv, samples.csv
};

// Returns the summary table printed by the CLI.
std::string run_eval(const EvalRequest& request);

}  // namespace kvlab::harness
