// kvlab demo: the whole first job with no arguments and no download — a synthetic dump,
// its cross-layer analysis and a summary table, all under ./kvlab-demo/.
#include <fmt/format.h>

#include <filesystem>
#include <memory>

#include "cli/analyze_run.h"
#include "cli/commands.h"
#include "cli/compress_run.h"
#include "datasets/synth_kv.h"

namespace kvlab::cli {

void add_demo(CLI::App& app, Action& action) {
  auto dir = std::make_shared<std::filesystem::path>("kvlab-demo");
  auto* cmd = app.add_subcommand("demo", "Synthetic dump → cross-layer analysis → compressor comparison (no arguments needed)");
  cmd->add_option("--dir", *dir, "Where the demo writes its files")->capture_default_str();
  cmd->callback([dir, &action] {
    action = [dir] {
      std::filesystem::create_directories(*dir);
      // Small enough to run in seconds, large enough to show the xKV effect: adjacent layers
      // share a drifting token subspace (high CKA, low cosine), so groups compress better.
      datasets::SynthConfig config;
      config.layers = 16;
      config.kv_heads = 4;
      config.q_heads = 16;
      config.head_dim = 64;
      config.tokens = 4096;
      const auto dump = *dir / "synthetic.h5";
      fmt::print("1/3 synthetic dump: {} layers × {} tokens × {} KV heads × {} dims → {}\n", config.layers,
                 config.tokens, config.kv_heads, config.head_dim, dump.string());
      datasets::write_synthetic_dump(config, dump);
      AnalyzeRequest request;
      request.dump = dump;
      request.out = *dir / "analysis";
      fmt::print("2/3 cross-layer analysis (keys and values) → {}\n\n", request.out.string());
      fmt::print("{}\n", run_analyze(request).summary);
      // Compressors at comparable budgets (≈ 5–6× for the low-rank, quantized and evicted ones), and
      // a chain: the comparison a KV-compression paper's first table makes.
      CompressRequest compress;
      compress.dump = dump;
      compress.out = *dir / "compress";
      compress.methods = {"svd:rk=32,rv=48",         "xkv:g=4,rk=112,rv=168",       "minicache",
                          "kivi:bits=2,group=32",    "streamingllm:keep=0.2",       "snapkv:keep=0.2",
                          "snapkv:keep=0.5+kivi:bits=4"};
      fmt::print("3/3 compressors scored on the dump → {}\n\n", compress.out.string());
      fmt::print("{}", run_compress(compress).summary);
    };
  });
}

}  // namespace kvlab::cli
