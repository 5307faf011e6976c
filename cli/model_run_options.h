// The options `dump` and `eval` share (harness/model_run_request.h), declared once so both
// commands spell and explain them the same way.
#pragma once

#include <CLI/CLI.hpp>

#include "harness/model_run_request.h"

namespace kvlab::cli {

// --model (required), --chat-template, --chat-template-kwargs, --max-tokens, --truncate,
// --tokenize, --device, --model-dtype, --limit, --threads.
void add_model_run_options(CLI::App& cmd, harness::ModelRunRequest& request);
// --chat-template and --chat-template-kwargs alone (also `kvlab tokenize`).
void add_chat_template_options(CLI::App& cmd, harness::ModelRunRequest& request);
// --tokenize alone (also `kvlab tokenize`).
void add_tokenize_option(CLI::App& cmd, harness::ModelRunRequest& request);

}  // namespace kvlab::cli
