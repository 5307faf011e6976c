// detect_chat_template: the "--chat-template auto" rule of chat_template.h.
#include <nlohmann/json.hpp>
#include <optional>

#include "core/error.h"
#include "core/parse_json.h"
#include "core/read_file.h"
#include "harness/tokenizer/chat_template.h"
#include "harness/tokenizer/jinja_chat.h"

namespace kvlab::harness {
namespace {

using nlohmann::json;

// Whether tokenizer_config.json's added_tokens_decoder lists "[INST]"; nullopt without one.
std::optional<bool> config_has_inst_token(const json& config) {
  const auto it = config.find("added_tokens_decoder");
  if (it == config.end() || !it->is_object()) return std::nullopt;
  for (const auto& [id, token] : it->items()) {
    if (token.is_object() && token.value("content", "") == "[INST]") return true;
  }
  return false;
}

}  // namespace

ChatTemplate detect_chat_template(const std::filesystem::path& model_dir, std::string_view model_type) {
  const auto own = load_checkpoint_chat_template(model_dir);  // the same files, in the same order
  if (!own) return ChatTemplate::none;
  const std::string* chat = &own->source;
  if (chat->find("<|start_header_id|>") != std::string::npos) return ChatTemplate::llama3;
  if (chat->find("<|im_start|>") != std::string::npos) return ChatTemplate::qwen2;
  if (chat->find("[INST]") != std::string::npos) {
    const auto config_file = model_dir / "tokenizer_config.json";
    std::optional<bool> single;
    if (std::filesystem::exists(config_file))
      single = config_has_inst_token(core::parse_json(core::read_file(config_file, "tokenizer file"), config_file.string()));
    if (!single) single = load_tokenizer(model_dir)->token_id("[INST]").has_value();
    return *single ? ChatTemplate::mistral_v3 : ChatTemplate::mistral_v1;
  }
  fail("{}: chat template has none of the known markers (<|start_header_id|>, <|im_start|>, [INST]) for model_type "
       "{:?}; pass --chat-template none|llama3|qwen2|mistral-v0.2|mistral-v0.3",
       own->origin, model_type);
}

}  // namespace kvlab::harness
