// `kvlab dump` as a library call: load the model and tokenizer, tokenize the prompts, stream
// every sample's layers into one dump written atomically. This header does not include
// libtorch, so the CLI compiles without it (docs/design.md §2: libtorch stays inside harness/).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include "harness/model_run_request.h"

namespace kvlab::harness {

struct DumpRequest : ModelRunRequest {
  std::filesystem::path prompts;   // JSONL prompts, or
  std::filesystem::path text;      // one text file as the context
  std::string question;            // with `text`
  int query_window = 64;
  bool attn_in = false;
  std::string dtype = "f16";       // storage in the dump
  std::filesystem::path out;
};

// Returns the summary printed by the CLI (one line per sample, then totals).
std::string run_dump(const DumpRequest& request);

}  // namespace kvlab::harness
