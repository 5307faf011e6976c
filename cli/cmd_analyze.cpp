// kvlab analyze: cross-layer token-wise cosine, linear CKA and eigen-rank curves of a dump.
#include <fmt/format.h>

#include <chrono>
#include <memory>

#include "analysis/dump_analysis.h"
#include "cli/analyze_run.h"
#include "cli/commands.h"
#include "core/error.h"

namespace kvlab::cli {

void add_analyze(CLI::App& app, Action& action) {
  auto opts = std::make_shared<AnalyzeRequest>();
  auto* cmd = app.add_subcommand("analyze", "Cross-layer similarity and eigen-rank of a KV dump (xKV Figure 2)");
  cmd->footer(
      "Writes DIR/analysis.json and CSV tables per kind: token_cosine, head_token_cosine, channel_cosine\n"
      "(xKV notebook variant), cka, eigen_rank, eigen_rank_mean and spectra.\n"
      "Example: kvlab analyze x.h5 --kind both --groups 1,2,4,8 --energy 0.9,0.95,0.99 --out x-analysis");
  cmd->add_option("dump", opts->dump, "KV dump (HDF5) written by `kvlab dump` or `kvlab synth`")->required();
  cmd->add_option("--sample", opts->sample, "Sample id (default: the first one in the dump)");
  cmd->add_option("--kind", opts->kind, "key, value or both")->check(CLI::IsMember({"key", "value", "both"}))
      ->capture_default_str();
  auto* groups = cmd->add_option("--groups", opts->groups,
                                 "Group sizes G for eigen-rank curves: contiguous, non-overlapping layer groups")
                     ->delimiter(',')->capture_default_str();
  cmd->add_option("--energy", opts->energies, "Energy levels in (0, 1] for the eigen-rank curves")
      ->delimiter(',')->capture_default_str();
  cmd->add_option("--precision", opts->precision,
                  "Precision of the cross-products and eigensolves: f32 (fast; fine for CKA and energy ranks), "
                  "f64 (when the kept tail reaches σ_r/σ₁ < 1e-3), or tf32 / bf16: cross-products from inputs "
                  "rounded as GPU tensor cores round them (f32 sums; the CPU emulates them, to study the effect)")
      ->check(CLI::IsMember({"f32", "tf32", "bf16", "f64"}))->capture_default_str();
  cmd->add_option("--token-block", opts->token_block, "Tokens streamed per block (memory: L·H·D·block·4 bytes)")
      ->check(positive())->capture_default_str();
  cmd->add_flag("--no-cka", opts->cosine_only,
                "Only token-wise cosines (one cheap pass; skips CKA, channel cosine and eigen-rank)");
  cmd->add_option("--threads", opts->threads,
                  "BLAS threads (default: all cores); with --device cuda, eigen-rank solves kept in flight at once, "
                  "each on a CUDA stream of its own (default 1)");
  cmd->add_option("--db", opts->db, "Results store the run is recorded in ('' for none)")->capture_default_str();
  cmd->add_option("--device", opts->device, "Linear algebra on cpu (OpenBLAS) or cuda (cuBLAS/cuSOLVER)")
      ->check(CLI::IsMember({"cpu", "cuda"}))->capture_default_str();
  cmd->add_option("--out", opts->out,
                  "Output directory (default: <dump>.analysis next to the dump); written whole, it must not hold "
                  "files unless --force");
  cmd->add_flag("--force", opts->force, "Replace the output directory when it already holds files (from an earlier run)");
  cmd->callback([opts, groups, &action] {
    opts->groups_given = groups->count() > 0;
    action = [opts] { fmt::print("{}", run_analyze(*opts).summary); };
  });
}

}  // namespace kvlab::cli
