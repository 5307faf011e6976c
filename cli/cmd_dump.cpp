// kvlab dump: run a Llama-family checkpoint over prompts and write each layer's pre-RoPE keys,
// values and last-W queries to an HDF5 dump as the prefill runs.
#include <fmt/format.h>

#include <memory>

#include "cli/commands.h"
#include "cli/model_run_options.h"
#include "harness/dump_job.h"

namespace kvlab::cli {

void add_dump(CLI::App& app, Action& action) {
  auto req = std::make_shared<harness::DumpRequest>();
  auto* cmd = app.add_subcommand("dump", "Run a model (HF safetensors folder) on prompts and dump its KV cache to HDF5");
  cmd->footer(
      "Prompts: --prompts FILE.jsonl, one {\"context\": ..., \"question\": ..., \"id\": ..., \"system\": ...}\n"
      "per line (only context is required), or --text FILE for one sample (add --question).\n"
      "The context and the question are tokenized separately so the boundary is exact: the dump's\n"
      "context_end marks where the question starts. With a chat template the rendered prompt already\n"
      "contains BOS, so none is added twice.\n\n"
      "Per sample and layer the dump holds pre-RoPE keys and values [T, H_kv, D], the last W queries\n"
      "[W, H_q, D] (pre-RoPE) and with --attn-in the normalized attention input [T, d_model]; the root\n"
      "holds config.json, the tokenizer, the template and kvlab's revision. Layers stream to disk as\n"
      "they are computed: memory is one layer's tensors plus the model. The file appears only when\n"
      "every sample is written.\n\n"
      "Example: kvlab dump --model Llama-3.1-8B-Instruct --text essay.txt --question 'Summarize.' \\\n"
      "           --max-tokens 16384 --device cuda --out llama-16k.h5");
  add_model_run_options(*cmd, *req);
  auto* prompts = cmd->add_option("--prompts", req->prompts, "Prompts, one JSON object per line");
  auto* text = cmd->add_option("--text", req->text, "A text file used as one sample's context");
  prompts->excludes(text);
  cmd->add_option("--question", req->question, "Question asked after --text's context");
  cmd->add_option("--query-window", req->query_window, "Queries kept for the last W tokens")
      ->check(positive())->capture_default_str();
  cmd->add_flag("--attn-in", req->attn_in, "Also dump the normalized attention input (for weight-based methods)");
  cmd->add_option("--dtype", req->dtype, "Storage type in the dump: f16, bf16 or f32")
      ->check(CLI::IsMember({"f16", "bf16", "f32"}))->capture_default_str();
  cmd->add_option("--out", req->out, "Output dump (.h5)")->required();
  cmd->callback([req, &action] {
    action = [req] { fmt::print("{}", harness::run_dump(*req)); };
  });
}

}  // namespace kvlab::cli
