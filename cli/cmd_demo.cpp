// kvlab demo: the whole first job with no arguments and no download — a synthetic dump, its
// cross-layer analysis, a compressor table, then (with the harness) the same scoring on the KV
// cache a tiny random Llama checkpoint produces; all under ./kvlab-demo/.
#include <fmt/format.h>

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>
#include <nlohmann/json.hpp>

#include "cli/analyze_run.h"
#include "cli/commands.h"
#include "cli/compress_run.h"
#include "cli/record_run.h"
#include "core/error.h"
#include "plots/plot.h"
#include "results/store.h"
#include "core/atomic_file.h"
#include "datasets/synth_kv.h"
#ifdef KVLAB_HAVE_HARNESS
#include "harness/dump_job.h"
#include "cli/eval_run.h"
#include "harness/tiny_model.h"
#endif

namespace kvlab::cli {
namespace {

#ifdef KVLAB_HAVE_HARNESS
constexpr bool kHarness = true;
// A prompt for the tiny model: what kvlab does, repeated into about a thousand tokens.
std::string tiny_prompt() {
  std::string text;
  for (int i = 0; i < 12; ++i)
    text += "kvlab dumps the KV cache of a language model layer by layer, measures how alike adjacent layers are, "
            "and scores compressors by the error they add to attention against the bytes they store. ";
  return text;
}
// Three overlapping windows of it as a prompts file (one JSON object per line).
std::string tiny_prompts() {
  const std::string text = tiny_prompt();
  std::string lines;
  for (int i = 0; i < 3; ++i)
    lines += nlohmann::json{{"id", fmt::format("p{}", i)},
                            {"context", text.substr(i * 40, 600)},
                            {"question", "What does kvlab score?"}}
                 .dump() +
             "\n";
  return lines;
}
#else
constexpr bool kHarness = false;
#endif

// The demo's figures (PNG, with their .gp/.dat) and a Markdown report linking them. Without
// gnuplot the report says so instead of failing the demo.
// The runs the figures draw: the synthetic dump's analysis and compress runs, and the tiny
// model's eval run (0 without the harness).
struct DemoRuns {
  std::int64_t analysis = 0, compress = 0, eval = 0, eviction = 0, eviction_eval = 0;
};

// Every selection method that takes a ratio by itself (not the wrappers or duoattention) at four
// ratios (the eviction comparison), with `window_keys` for the methods that score with an
// observation window.
std::vector<std::string> eviction_sweep(const std::string& window_keys) {
  std::vector<std::string> out;
  for (const char* name : {"streamingllm", "h2o", "snapkv", "pyramidkv", "knorm", "keydiff", "tova", "expected_attention", "random"}) {
    const bool windowed = std::string_view(name) == "snapkv" || std::string_view(name) == "pyramidkv";
    out.push_back(fmt::format("{}:keep=[0.1,0.2,0.35,0.5]{}", name, windowed ? window_keys : ""));
  }
  return out;
}

void write_figures(const std::filesystem::path& dir, const std::filesystem::path& db, const DemoRuns& runs) {
  const results::Store store(db, true);
  struct Figure {
    const char* kind;
    std::int64_t run;
    const char* file;
    const char* caption;
  };
  std::vector<Figure> figures = {
      {"heatmap", runs.analysis, "key_cka.png", "Linear CKA between the synthetic dump's key layers: adjacent layers align."},
      {"eigen-rank", runs.analysis, "eigen_rank.png", "Rank needed for 90/95/99 % of the energy vs group size (xKV, Fig. 2)."},
      {"spectra", runs.analysis, "spectra.png", "Energy kept vs rank fraction: grouping layers concentrates the energy."},
      {"error-vs-ratio", runs.compress, "kl_vs_ratio.png", "Attention KL vs compression ratio, one line per method family."}};
  if (runs.eviction)
    figures.push_back({"error-vs-ratio", runs.eviction, "eviction_kl_vs_ratio.png",
                       "Attention KL vs compression ratio of every selection method that takes a ratio, at keep 0.1, 0.2, 0.35, 0.5 (synthetic dump, 8 layers × 1024 tokens)."});
  if (runs.eval) figures.push_back({"accuracy-vs-ratio", runs.eval, "agreement_vs_ratio.png",
                                    "Agreement of greedy decoding with the uncompressed baseline on the tiny Llama."});
  if (runs.eviction_eval)
    figures.push_back({"accuracy-vs-ratio", runs.eviction_eval, "eviction_agreement_vs_ratio.png",
                       "Agreement with the uncompressed baseline of every selection method that takes a ratio, at four ratios (tiny Llama)."});
  std::string report = "# kvlab demo\n\nFigures from the runs in `kvlab-results.sqlite` (`kvlab plot`; each has its gnuplot "
                       "script and data beside it).\n\n";
  try {
    for (const auto& f : figures) {
      plots::PlotRequest r;
      r.kind = f.kind;
      r.runs = {std::to_string(f.run)};
      r.out = dir / "figures" / f.file;
      plots::plot(store, r);
      report += fmt::format("![{0}](figures/{1})\n\n*{0}*\n\n", f.caption, f.file);
    }
    fmt::print("\nfigures and a report: {}\n", (dir / "report.md").string());
  } catch (const Error& e) {
    report += fmt::format("No figures: {}\n", e.what());
    fmt::print("\nno figures ({})\n", e.what());
  }
  core::write_file_atomic(dir / "report.md", report);
}

}  // namespace

void add_demo(CLI::App& app, Action& action) {
  auto dir = std::make_shared<std::filesystem::path>("kvlab-demo");
  auto* cmd = app.add_subcommand("demo", "Synthetic dump → cross-layer analysis → compressor comparison → a tiny model's dump (no arguments needed)");
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
      const int steps = kHarness ? 4 : 3;
      fmt::print("1/{} synthetic dump: {} layers × {} tokens × {} KV heads × {} dims → {}\n", steps, config.layers,
                 config.tokens, config.kv_heads, config.head_dim, dump.string());
      datasets::write_synthetic_dump(config, dump);
      const auto db = *dir / "kvlab-results.sqlite";  // every run of the demo lands in one store
      for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(db.string() + suffix);  // this demo's runs only
      DemoRuns runs;
      AnalyzeRequest request;
      request.db = db;
      request.dump = dump;
      request.out = *dir / "analysis";
      request.force = true;  // the demo's own folders: a second demo replaces the first one's
      fmt::print("2/{} cross-layer analysis (keys and values) → {}\n\n", steps, request.out.string());
      const auto analysis = run_analyze(request);
      runs.analysis = analysis.run;
      fmt::print("{}\n", analysis.summary);
      // Compressors at comparable budgets (≈ 5–6× for the low-rank, quantized and evicted ones), and
      // a chain: the comparison a KV-compression paper's first table makes.
      CompressRequest compress;
      compress.db = db;
      compress.dump = dump;
      compress.out = *dir / "compress";
      compress.force = true;
      compress.methods = {"svd:rk=32,rv=48",         "xkv:g=4,rk=112,rv=168",       "minicache",
                          "kivi:bits=2,group=32",    "streamingllm:keep=0.2",       "snapkv:keep=0.2",
                          "snapkv:keep=0.5+kivi:bits=4"};
      fmt::print("3/{} compressors scored on the dump → {}\n\n", steps, compress.out.string());
      const auto scored = run_compress(compress);
      runs.compress = scored.run;
      fmt::print("{}", scored.summary);
      // The eviction comparison: 36 specs, so on a smaller dump of the same structure (8 layers ×
      // 1024 tokens) to keep the demo quick.
      auto small = config;
      small.layers = 8;
      small.tokens = 1024;
      CompressRequest eviction = compress;
      eviction.dump = *dir / "synthetic-small.h5";
      datasets::write_synthetic_dump(small, eviction.dump);
      eviction.out = *dir / "eviction";
      eviction.methods = eviction_sweep("");
      fmt::print("\n  every selection method that takes a ratio by itself, at four ratios, on a smaller dump ({} layers × {} tokens) → {}\n", small.layers,
                 small.tokens, eviction.out.string());
      runs.eviction = run_compress(eviction).run;
#ifdef KVLAB_HAVE_HARNESS
      // The same pipeline from a model: a tiny random Llama checkpoint (adjacent layers made
      // alike), its KV cache dumped by the libtorch harness, then scored like any dump.
      harness::TinyModelOptions tiny;
      tiny.layers = 8;
      tiny.hidden = 128;
      tiny.heads = 8;
      tiny.kv_heads = 2;
      tiny.intermediate = 256;
      tiny.layer_similarity = 0.8;
      const auto model_dir = *dir / "tiny-llama";
      harness::write_tiny_model(model_dir, tiny);
      harness::DumpRequest dump_request;
      dump_request.model = model_dir;
      dump_request.text = *dir / "tiny-llama" / "prompt.txt";
      core::write_file_atomic(dump_request.text, std::string(tiny_prompt()));
      dump_request.question = "What does kvlab measure?";
      dump_request.query_window = 32;
      dump_request.out = *dir / "tiny-llama.h5";
      fmt::print("\n4/{} a tiny random Llama checkpoint ({}) dumped by the harness → {}\n", steps, model_dir.string(),
                 dump_request.out.string());
      harness::run_dump(dump_request);
      CompressRequest model_compress;
      model_compress.db = db;
      model_compress.dump = dump_request.out;
      model_compress.out = *dir / "tiny-llama-compress";
      model_compress.force = true;
      model_compress.methods = {"svd:rk=16,rv=16", "xkv:g=4,rk=48,rv=48", "kivi:bits=2,group=32", "snapkv:keep=0.25,window=16"};
      fmt::print("{}", run_compress(model_compress).summary);
      // And decoding from those compressed caches: how far each method moves the model's output.
      const auto prompts = *dir / "tiny-llama" / "prompts.jsonl";
      core::write_file_atomic(prompts, tiny_prompts());
      harness::EvalRequest eval;
      eval.model = model_dir;
      eval.prompts = prompts;
      eval.methods = {"full", "xkv:g=4,rk=48,rv=48", "kivi:bits=2,group=32,residual=32", "snapkv:keep=0.25,window=16"};
      eval.query_window = 16;
      eval.max_new_tokens = 16;
      eval.out = *dir / "tiny-llama-eval";
      fmt::print("\n  decoding from the compressed caches (greedy, vs the uncompressed baseline) → {}\n", eval.out.string());
      const auto outcome = run_eval_into(eval, true);
      fmt::print("{}", outcome.summary);
      runs.eval = record_eval(db, outcome.report);
      harness::EvalRequest eviction_eval = eval;
      eviction_eval.methods = eviction_sweep(",window=4");
      eviction_eval.out = *dir / "tiny-llama-eviction";
      fmt::print("\n  the same selection methods at four ratios, decoding → {}\n", eviction_eval.out.string());
      runs.eviction_eval = record_eval(db, run_eval_into(eviction_eval, true).report);
#endif
      write_figures(*dir, db, runs);
      fmt::print("\nEvery run above is recorded in {0}: try `kvlab results ls --db {0}`,\n"
                 "`kvlab results export latest --db {0} --format latex` or `kvlab compare A B --db {0}`.\n",
                 db.string());
    };
  });
}

}  // namespace kvlab::cli
