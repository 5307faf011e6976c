// kvlab compress: score compressors (and chains, and rank sweeps) on a KV dump.
#include <fmt/format.h>

#include <memory>

#include "cli/commands.h"
#include "cli/compress_run.h"
#include "compressors/spec.h"

namespace kvlab::cli {

void add_compress(CLI::App& app, Action& action) {
  auto req = std::make_shared<CompressRequest>();
  auto* cmd = app.add_subcommand("compress", "Score KV compressors on a dump: K/V error, attention error and KL, bytes");
  cmd->footer(fmt::format(
      "Spec grammar: METHOD[:KEY=VALUE,...] joined by '+' into chains (eviction, then one transform,\n"
      "then quantizers), e.g. snapkv:keep=0.5+xkv:g=4,rk=384+kivi:bits=4. A value may sweep: rk=64..512:64\n"
      "or rk=[96,192,384] (a rank sweep of svd/xkv reuses one decomposition per group). Specs print in\n"
      "canonical form, every key spelled out.\n\n"
      "Writes DIR/compress.json (everything, per layer, with provenance), DIR/methods.csv (one row per\n"
      "spec) and DIR/layers.csv (one row per spec and layer).\n\n"
      "Example: kvlab compress x.h5 --method svd:rk=96 --method xkv:g=4,rk=64..512:64 --method kivi:bits=2 --out x-compress\n\n"
      "Methods and keys (defaults are the papers'):\n{}",
      compressors::describe_methods()));
  cmd->add_option("dump", req->dump, "KV dump (HDF5) written by `kvlab dump` or `kvlab synth`")->required();
  cmd->add_option("-m,--method", req->methods, "Compressor spec (repeat for several; each may sweep)")->required();
  cmd->add_option("--sample", req->sample, "Sample id (default: the first one in the dump)");
  cmd->add_option("--model", req->model, "Model checkpoint directory (safetensors): the checkpoint the dump came from, for weight-based methods (commonkv, criticalkv) and for methods that run the model on the dumped tokens (kvzip)");
  cmd->add_option("--threads", req->threads, "BLAS threads (default: all cores)");
  cmd->add_option("--db", req->db, "Results store the run is recorded in ('' for none)")->capture_default_str();
  cmd->add_option("--device", req->device, "Linear algebra on cpu (OpenBLAS) or cuda (cuBLAS/cuSOLVER)")
      ->check(CLI::IsMember({"cpu", "cuda"}))->capture_default_str();
  cmd->add_option("--out", req->out,
                  "Output directory (default: <dump>.compress next to the dump); written whole, it must not hold "
                  "files unless --force");
  cmd->add_flag("--force", req->force, "Replace the output directory when it already holds files (from an earlier run)");
  cmd->callback([req, &action] {
    action = [req] {
      const auto outcome = run_compress(*req);
      fmt::print("{}\nwrote {}\n", outcome.summary, outcome.out.string());
    };
  });
}

}  // namespace kvlab::cli
