// detect_chat_template: the "--chat-template auto" rule of chat_template.h.
#include <nlohmann/json.hpp>
#include <optional>

#include "core/error.h"
#include "core/parse_json.h"
#include "core/read_file.h"
#include "harness/tokenizer/chat_template.h"

namespace kvlab::harness {
namespace {

using nlohmann::json;

// The file's text, or nothing when the folder does not have it (these files are optional).
std::optional<std::string> read_if_present(const std::filesystem::path& file) {
  if (!std::filesystem::exists(file)) return std::nullopt;
  return core::read_file(file, "tokenizer file");
}

// The template text of a "chat_template" value: a string, or a list of {name, template}.
std::optional<std::string> template_text(const json& v, const std::filesystem::path& file) {
  if (v.is_null()) return std::nullopt;
  if (v.is_string()) return v.get<std::string>();
  if (!v.is_array()) fail("{}: chat_template: expected a string or a list of {{name, template}}", file.string());
  const json* chosen = nullptr;
  for (const json& entry : v) {
    if (!entry.is_object() || !entry.contains("template") || !entry["template"].is_string()) {
      fail("{}: chat_template: list entry without a \"template\" string", file.string());
    }
    if (!chosen || entry.value("name", "") == "default") chosen = &entry;
    if (entry.value("name", "") == "default") break;
  }
  if (!chosen) return std::nullopt;
  return (*chosen)["template"].get<std::string>();
}

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
  const auto config_file = model_dir / "tokenizer_config.json";
  json config = json::object();
  if (const auto text = read_if_present(config_file)) config = core::parse_json(*text, config_file.string());
  if (!config.is_object()) fail("{}: expected a JSON object", config_file.string());

  std::filesystem::path source = config_file;
  std::optional<std::string> chat = template_text(config.value("chat_template", json()), config_file);
  if (!chat) {
    // transformers ≥ 4.43 may save the template beside the config instead.
    if (auto jinja = read_if_present(model_dir / "chat_template.jinja")) {
      chat = std::move(jinja);
      source = model_dir / "chat_template.jinja";
    } else if (auto j = read_if_present(model_dir / "chat_template.json")) {
      source = model_dir / "chat_template.json";
      const json parsed = core::parse_json(*j, source.string());
      chat = template_text(parsed.is_object() ? parsed.value("chat_template", json()) : json(), source);
    }
  }
  if (!chat) return ChatTemplate::none;
  if (chat->find("<|start_header_id|>") != std::string::npos) return ChatTemplate::llama3;
  if (chat->find("<|im_start|>") != std::string::npos) return ChatTemplate::qwen2;
  if (chat->find("[INST]") != std::string::npos) {
    std::optional<bool> single = config_has_inst_token(config);
    if (!single) single = load_tokenizer(model_dir)->token_id("[INST]").has_value();
    return *single ? ChatTemplate::mistral_v3 : ChatTemplate::mistral_v1;
  }
  fail("{}: chat template has none of the known markers (<|start_header_id|>, <|im_start|>, [INST]) for model_type "
       "{:?}; pass --chat-template none|llama3|qwen2|mistral-v0.2|mistral-v0.3",
       source.string(), model_type);
}

}  // namespace kvlab::harness
