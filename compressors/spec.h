// Compressor specs: strings with a grammar, a canonical printer and sweeps.
//
//   chain  := stage ('+' stage)*                  e.g. snapkv:keep=0.5+xkv:g=4,rk=384+kivi:bits=4
//   stage  := METHOD [':' param (',' param)*]
//   param  := KEY '=' VALUE
//   VALUE  := a number or a word (no ',', '+', ':' or '='); in a sweep also
//             A..B:STEP   (inclusive integer or real range, e.g. rk=64..512:64)
//             [v1,v2,…]   (a list, e.g. rk=[96,192,384])
//
// Parsing fills every key the method has with its default, checks types and ranges, and lets
// the method resolve derived defaults (xkv's rv = 1.5·rk). Unknown methods and keys are errors
// that list what is allowed. The canonical form prints every key in the method's declared
// order, so two specs are the same run exactly when their canonical strings are equal, and
// parse(print(parse(s))) == parse(s).
//
// A chain runs eviction first, then at most one transform (low-rank or merging) on the kept
// tokens, then quantization of what is stored; stage kinds out of that order are an error.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kvlab::compressors {

enum class StageKind { eviction, transform, quantizer };
std::string_view to_string(StageKind kind);

enum class ParamType { integer, real, choice, text };

struct ParamDef {
  std::string key;
  ParamType type = ParamType::integer;
  std::string default_value;         // as it would be written in a spec
  std::string help;                  // one line: meaning, units, the paper's value
  std::vector<std::string> choices;  // for ParamType::choice
  double min = -1e300, max = 1e300;  // inclusive bounds for integer/real
};

struct StageSpec;
class EvictionStage;   // compressors/compressor.h
class TransformStage;
class QuantizerStage;
class Compressed;      // compressors/compressed.h
struct CompressContext;

// What a method needs beyond the KV cache and its query window; callers check it up front (and
// eval captures attention inputs only when a method asks for them).
struct MethodNeeds {
  bool attention_inputs = false;  // each layer's normalized attention input [T, d_model] (dump --attn-in)
  bool checkpoint = false;        // the model's weights (compress --model DIR; eval has them)
  bool live_model = false;        // runs the model itself while compressing
};

// Quest's selection rule (docs/methods/quest.md): pages of `page_size` tokens; a query attends
// its current page and the `page_budget` − 1 earlier pages with the highest bound
// Σ_c max(q_c·min_c, q_c·max_c) of q·k over the page, or every page when there are at most
// `page_budget`; layers below `skip_layers` attend everything.
struct PagedSelection {
  std::int64_t page_size = 0;    // tokens per page
  std::int64_t page_budget = 0;  // pages a query attends, the current one included (≥ 1)
  int skip_layers = 0;
};

// How a method runs where the model's cache lies (the compression hook's resident route,
// harness/resident_routes.cpp), when it can: the device implementation its stage uses. The
// chains the resident route takes are an optional eviction stage (`scores`), an optional
// transform and an optional quantizer, each with a device path (harness/compression_hook.h).
enum class DevicePath {
  none,       // the host route only
  scores,     // eviction scored through the cache source where the cache lies (harness/window_scores.h)
  cells,      // the (kept) cells stored as they are (full)
  low_rank,   // svd/xkv factors (compressors/low_rank_resident.cpp)
  minicache,  // SLERP merge of layer pairs, alone in its chain (harness/minicache_on_device.h)
  commonkv,   // cross-layer latents, with no eviction before it (harness/commonkv_on_device.h)
  kivi,       // KIVI's packed form of what the stages before it store (harness/kivi_on_device.h)
};

// A method, as the registry (compressors/registry.cpp) holds it: everything kvlab knows about it
// lives here, so no code outside the method's own file dispatches on its name.
struct MethodDef {
  std::string name;  // "xkv"
  StageKind kind = StageKind::transform;
  std::string help;  // one paragraph for `kvlab compress --help`
  std::vector<ParamDef> params;
  // Optional: fills derived defaults and checks cross-key constraints after parsing
  // (`given` lists the keys the user wrote). Throws kvlab::Error naming the key.
  std::function<void(StageSpec& spec, const std::vector<std::string>& given)> resolve;
  // The stage's factory: the one that matches `kind` is set.
  std::function<std::unique_ptr<EvictionStage>(const StageSpec&)> make_eviction{};
  std::function<std::unique_ptr<TransformStage>(const StageSpec&)> make_transform{};
  std::function<std::unique_ptr<QuantizerStage>(const StageSpec&)> make_quantizer{};
  // Optional, transforms only: compresses variants of one spec that differ in keys that sweep
  // (svd/xkv ranks), sharing work between them — variants[i] gives result i.
  std::function<std::vector<std::unique_ptr<Compressed>>(const CompressContext&, const std::vector<StageSpec>&)> sweep{};
  MethodNeeds needs{};
  // Compresses each layer from that layer alone (eviction, quantizers, full), so a chain of such
  // stages can be compressed and scored one layer at a time (compressors/chain.h).
  bool layer_local = false;
  // Stores the (kept) cells of the cache themselves at 16 bits: the `full` baseline.
  bool stores_cells = false;
  // Set for a method that selects pages per decode query (quest): its page rule for a cache of
  // `tokens` tokens. On dumps its reconstruction carries each window query's own selection
  // (LayerKV::query_kept); in `eval` the model applies the rule at every decode step
  // (harness/paged_selection.h). It stores the whole cache, so no eviction may run before it.
  std::function<PagedSelection(const StageSpec& spec, std::int64_t tokens)> paged_selection{};
  bool per_query() const { return static_cast<bool>(paged_selection); }
  // Eviction only, optional: whether this spec keeps one selection per *query* head (snapkv and
  // pyramidkv with granularity=query_head, the SnapKV repository's repeat_kv layout): its stage's
  // EvictionStage::select_query_heads gives the selection and the chain stores H_q heads of cells
  // (compressors/query_head_cells.h). No stage may follow it in a chain yet; in `eval` the cache
  // keeps one mask per query head (harness/model/kv_cache.h KvCache::keep).
  std::function<bool(const StageSpec&)> per_query_head{};
  DevicePath device = DevicePath::none;
};

struct StageSpec {
  std::string method;
  std::vector<std::pair<std::string, std::string>> params;  // every key of the method, declared order

  const std::string& get(std::string_view key) const;  // fails naming the key when absent
  std::int64_t get_int(std::string_view key) const;
  double get_real(std::string_view key) const;
  void set(std::string_view key, std::string value);
  std::string to_string() const;  // canonical: "xkv:g=4,rk=384,rv=576,..."
};

struct ChainSpec {
  std::vector<StageSpec> stages;
  std::string to_string() const;  // stages' canonical forms joined by '+'
};

using MethodTable = std::vector<MethodDef>;

// Every method kvlab knows, in the order `--help` lists them (compressors/registry.cpp).
const MethodTable& methods();
const MethodDef& method(std::string_view name, const MethodTable& table = methods());  // fails listing them
// Whether `stage` keeps one selection per query head (its MethodDef::per_query_head holds).
bool selects_per_query_head(const StageSpec& stage);

// Parses one concrete spec (no ranges or lists).
ChainSpec parse_spec(std::string_view text, const MethodTable& table = methods());
// Parses a spec that may sweep values; returns every concrete spec of the grid (last key
// varying fastest). A spec without sweeps gives one element.
std::vector<ChainSpec> expand_sweep(std::string_view text, const MethodTable& table = methods());
// One stage of a known method from its parameter text ("g=4,rk=384"), for code and tests that
// hold a MethodDef.
StageSpec parse_stage(const MethodDef& def, std::string_view params);

// Formats a real the way specs print it: shortest form that reads back to the same double.
std::string format_real(double value);

// A line-per-method description of every method and key, for --help.
std::string describe_methods(const MethodTable& table = methods());

}  // namespace kvlab::compressors
