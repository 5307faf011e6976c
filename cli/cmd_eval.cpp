// kvlab eval: decode from compressed caches and compare with the uncompressed baseline.
#include <fmt/format.h>

#include <memory>

#include "cli/commands.h"
#include "cli/eval_run.h"
#include "cli/model_run_options.h"
#include "cli/record_run.h"

namespace kvlab::cli {

void add_eval(CLI::App& app, Action& action) {
  auto req = std::make_shared<harness::EvalRequest>();
  auto* cmd = app.add_subcommand("eval", "Decode with compressed KV caches and compare with the uncompressed baseline");
  cmd->footer(
      "For every prompt kvlab prefills with exact attention, compresses the cache at the end of the\n"
      "prefill with each --method (the same chains `kvlab compress` scores), then decodes greedily;\n"
      "generated tokens are cached uncompressed, as the papers do (--recompress-every N compresses\n"
      "them too: every N tokens the chain runs again on the exact cache of everything so far, the way\n"
      "KIVI quantizes decode tokens and continuous eviction keeps a budget; bytes and ratios then\n"
      "cover the context and the baseline's answer). The uncompressed baseline always\n"
      "runs alongside. --question in-context compresses the question with the context (the first\n"
      "token then comes from the exact prefill, as in SnapKV); after-compression compresses the\n"
      "context alone and decodes the question from the compressed cache (question-agnostic, as\n"
      "kvpress and prefix caching need).\n\n"
      "Reported per method: agreement (share of the baseline's greedy tokens reproduced, position by\n"
      "position), exact match, mean KL(p_baseline || p_method) over the baseline's answer\n"
      "(teacher-forced), bytes stored and the compression ratio. These need no task and are\n"
      "meaningful on tiny random models too. Writes DIR/eval.json (per-sample predictions with the\n"
      "baseline's, prompt hashes, provenance), DIR/methods.csv and DIR/samples.csv.\n\n"
      "With --task the prompts are generated (RULER-style, sized with the model's tokenizer) and every\n"
      "prediction — the baseline's too — is scored with the task's metric (accuracy). Accuracy means\n"
      "something on real checkpoints; the fidelity figures also on tiny random ones.\n\n"
      "Examples:\n"
      "  kvlab eval --model tiny --prompts p.jsonl --method snapkv:keep=0.25 --method xkv:g=4,rk=32 --out ev\n"
      "  kvlab eval --model Llama-3.1-8B-Instruct --task ruler:niah_single_1 --length 8192 --samples 50 \\\n"
      "    --method xkv:g=4,rk=384,rv=576 --device cuda --out niah");
  add_model_run_options(*cmd, *req);
  auto* prompts = cmd->add_option("--prompts", req->prompts, "Prompts, one JSON object per line (see `kvlab dump --help`)");
  auto* task = cmd->add_option("--task", req->task,
                               "A generated task instead: ruler:niah_single_1|2|3, niah_multikey_1|2|3, niah_multivalue, "
                               "niah_multiquery, vt, cwe, fwe, qa_1, qa_2");
  auto* longbench = cmd->add_option("--longbench", req->longbench,
                                    "Or a LongBench-format .jsonl (one dataset), cut to --length tokens by LongBench's "
                                    "middle truncation and scored with that dataset's metric");
  prompts->excludes(task);
  prompts->excludes(longbench);
  task->excludes(longbench);
  cmd->add_option("--length", req->length, "Task prompt length in the model's tokens (template included)")
      ->capture_default_str();
  cmd->add_option("--samples", req->samples, "Task samples")->check(positive())->capture_default_str();
  cmd->add_option("--seed", req->seed, "Task generator seed (same seed, same prompts)")->capture_default_str();
  cmd->add_option("--depth", req->depth_percent,
                  "niah tasks: put the needles at this depth, in percent of the haystack (default: RULER's random "
                  "depths); sweep it for a depth × length figure (kvlab plot needle)")
      ->check(CLI::Range(0.0, 100.0));
  cmd->add_option("--scoring", req->scoring, "official (RULER / LongBench) or xkv (xKV's variant of RULER's match)")
      ->check(CLI::IsMember({"official", "xkv"}))->capture_default_str();
  cmd->add_option("--words", req->words, "Word list for RULER keys/values (default /usr/share/dict/american-english)");
  cmd->add_option("--essay", req->essay, "Text file used as the haystack by essay-based tasks");
  cmd->add_option("--qa", req->qa, "SQuAD (qa_1) or HotpotQA (qa_2) JSON file");
  cmd->add_option("-m,--method", req->methods, "Compressor spec (repeat; may sweep; see `kvlab compress --help`)")
      ->required();
  cmd->add_option("--question", req->question, "in-context or after-compression")
      ->check(CLI::IsMember({"in-context", "after-compression"}))->capture_default_str();
  cmd->add_option("--recompress-every", req->recompress_every,
                  "Compress generated tokens too: run the chain again every N generated tokens (0: never)")
      ->check(CLI::Range(0, 1 << 20))
      ->capture_default_str();
  cmd->add_option("--compress-route", req->compress_route,
                  "Where the hook compresses. auto: on the model's own tensors where that is faster (svd/xkv, "
                  "alone or followed by kivi, with the randomized solver or on prompts of at least G·H_kv·D tokens; "
                  "an eviction method, alone or followed by kivi or svd/xkv, which scores there and writes its keep "
                  "masks; on a GPU also KIVI on the dense cache, MiniCache alone, and CommonKV alone or followed by "
                  "kivi); resident: every chain that can stays on the model's tensors, on any device; host: every "
                  "layer goes through host f32, as other chains do (for timing or checking the routes against each "
                  "other)")
      ->check(CLI::IsMember({"auto", "resident", "host"}))
      ->capture_default_str();
  cmd->add_option("--max-new-tokens", req->max_new_tokens,
                  "Greedy tokens generated per prompt (0: the task's default, else 32)")->capture_default_str();
  cmd->add_option("--query-window", req->query_window, "Observation window (last W prompt tokens) given to compressors")
      ->check(positive())->capture_default_str();
  cmd->add_option("--out", req->out, "Output directory (written whole: it must not hold files, unless --force)")
      ->required();
  auto force = std::make_shared<bool>(false);
  cmd->add_flag("--force", *force, "Replace --out when it already holds files (from an earlier run)");
  auto db = std::make_shared<std::filesystem::path>("kvlab-results.sqlite");
  cmd->add_option("--db", *db, "Results store the run is recorded in ('' for none)")->capture_default_str();
  cmd->callback([req, db, force, &action] {
    action = [req, db, force] {
      const auto outcome = run_eval_into(*req, *force);
      fmt::print("{}", outcome.summary);
      record_eval(*db, outcome.report);
    };
  });
}

}  // namespace kvlab::cli
