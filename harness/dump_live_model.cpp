#include "harness/dump_live_model.h"

#include "compressors/cache_source.h"
#include "core/error.h"
#include "harness/kv_cache_source.h"
#include "harness/live_model_probe.h"
#include "harness/tokenizer/jinja_chat.h"

namespace kvlab::harness {
namespace {

// The dump's provenance string (describe(ChatFormat): "none", "llama3", `own {"k":v}`) back to
// the format it names, read from the checkpoint.
ChatFormat dumped_chat_format(const std::filesystem::path& model_dir, const std::string& recorded) {
  if (recorded.rfind("own", 0) == 0)
    return choose_chat_format(model_dir, "own", parse_template_kwargs(recorded.size() > 3 ? recorded.substr(4) : ""));
  return choose_chat_format(model_dir, recorded.empty() ? "none" : recorded);
}

class DumpLiveModel final : public compressors::LiveModel {
 public:
  DumpLiveModel(const std::filesystem::path& dir, const core::DumpReader& dump, const std::string& sample)
      : model_(LlamaModel::load(dir, {})),
        cache_(model_.config().num_layers),
        tokenizer_(load_tokenizer(dir)),
        chat_(dumped_chat_format(dir, dump.info().chat_template)) {
    const compressors::DumpCache source(dump, sample);
    const auto& s = source.shape();
    const auto& c = model_.config();
    if (s.layers != c.num_layers || s.kv_heads != c.num_kv_heads || s.q_heads != c.num_heads || s.head_dim != c.head_dim)
      fail("{}: the dump holds {} layers × {} KV heads ({} query heads) × {} dims, the checkpoint {} has {} × {} ({}) "
           "× {}: give the checkpoint the dump came from",
           source.describe(), s.layers, s.kv_heads, s.q_heads, s.head_dim, dir.string(), c.num_layers,
           c.num_kv_heads, c.num_heads, c.head_dim);
    const auto meta = dump.sample(sample);
    if (meta.tokens.empty())
      fail("{}: the sample holds no token ids (a synthetic dump?); running the model needs the dumped tokens",
           source.describe());
    const auto positions = at::tensor(source.positions(), at::kLong);
    for (int l = 0; l < s.layers; ++l) {
      const auto key = source.layer(l, compressors::Part::key), value = source.layer(l, compressors::Part::value);
      const auto k = host_view(key), v = host_view(value);  // [T, H_kv, D] views; append copies them
      cache_.append(l, k, model_.rotate(k, positions, l), v);
    }
    cache_.append_positions(positions);
    probe_ = std::make_unique<ModelProbe>(model_, cache_, meta.tokens, *tokenizer_, chat_);
  }

  std::vector<std::int32_t> cached_tokens() const override { return probe_->cached_tokens(); }
  std::vector<std::int32_t> encode(std::string_view text) const override { return probe_->encode(text); }
  std::vector<std::int32_t> answer_start() const override { return probe_->answer_start(); }
  void probe(std::span<const std::int32_t> tokens, const ProbeObserver& observe) const override {
    probe_->probe(tokens, observe);
  }

 private:
  LlamaModel model_;
  KvCache cache_;
  std::unique_ptr<Tokenizer> tokenizer_;
  ChatFormat chat_;
  std::unique_ptr<ModelProbe> probe_;
};

}  // namespace

std::unique_ptr<compressors::LiveModel> live_model_for_dump(const std::filesystem::path& model_dir,
                                                            const core::DumpReader& dump, const std::string& sample) {
  return std::make_unique<DumpLiveModel>(model_dir, dump, sample);
}

}  // namespace kvlab::harness
