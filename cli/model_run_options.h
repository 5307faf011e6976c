// The options `dump` and `eval` share (harness/model_run_request.h), declared once so both
// commands spell and explain them the same way.
#pragma once

#include <CLI/CLI.hpp>

#include "harness/model_run_request.h"

namespace kvlab::cli {

// --model (required), --chat-template, --max-tokens, --truncate, --device, --model-dtype,
// --limit, --threads.
void add_model_run_options(CLI::App& cmd, harness::ModelRunRequest& request);

}  // namespace kvlab::cli
