#include "harness/tokenizer/jinja_chat.h"

#include "core/error.h"
#include "core/parse_json.h"
#include "core/read_file.h"
#include "harness/tokenizer/jinja.h"

namespace kvlab::harness {
namespace {

using nlohmann::json;
using ordered = nlohmann::ordered_json;

std::optional<std::string> read_if_present(const std::filesystem::path& file) {
  if (!std::filesystem::exists(file)) return std::nullopt;
  return core::read_file(file, "tokenizer file");
}

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

// bos_token / eos_token: a string, or an AddedToken object {"content": ...}; absent or null → "".
std::string special_token(const json& config, const char* key, const std::filesystem::path& file) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return {};
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) return (*it)["content"].get<std::string>();
  fail("{}: {}: expected a string or an object with a \"content\" string", file.string(), key);
}

std::size_t count_of(std::string_view text, std::string_view needle) {
  std::size_t n = 0;
  for (std::size_t p = text.find(needle); p != std::string_view::npos; p = text.find(needle, p + needle.size())) ++n;
  return n;
}

}  // namespace

std::optional<CheckpointChatTemplate> load_checkpoint_chat_template(const std::filesystem::path& model_dir) {
  const auto config_file = model_dir / "tokenizer_config.json";
  json config = json::object();
  if (const auto text = read_if_present(config_file)) config = core::parse_json(*text, config_file.string());
  if (!config.is_object()) fail("{}: expected a JSON object", config_file.string());
  CheckpointChatTemplate out;
  out.bos_token = special_token(config, "bos_token", config_file);
  out.eos_token = special_token(config, "eos_token", config_file);
  out.origin = config_file.string();
  std::optional<std::string> chat = template_text(config.value("chat_template", json()), config_file);
  if (!chat) {
    if (auto jinja = read_if_present(model_dir / "chat_template.jinja")) {
      chat = std::move(jinja);
      out.origin = (model_dir / "chat_template.jinja").string();
    } else if (auto j = read_if_present(model_dir / "chat_template.json")) {
      out.origin = (model_dir / "chat_template.json").string();
      const json parsed = core::parse_json(*j, out.origin);
      chat = template_text(parsed.is_object() ? parsed.value("chat_template", json()) : json(), out.origin);
    }
  }
  if (!chat) return std::nullopt;
  out.source = std::move(*chat);
  return out;
}

nlohmann::ordered_json parse_template_kwargs(std::string_view json_text) {
  if (json_text.find_first_not_of(" \t\r\n") == std::string_view::npos) return ordered::object();
  ordered kwargs = ordered::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (kwargs.is_discarded())
    fail("--chat-template-kwargs: not valid JSON; expected an object such as '{{\"enable_thinking\": false}}'");
  check_template_kwargs(kwargs);
  return kwargs;
}

void check_template_kwargs(const nlohmann::ordered_json& kwargs) {
  if (!kwargs.is_object())
    fail("--chat-template-kwargs: expected a JSON object such as '{{\"enable_thinking\": false}}', got a JSON {}",
         kwargs.type_name());
  for (const char* reserved : {"messages", "tools", "documents", "add_generation_prompt", "continue_final_message"})
    if (kwargs.contains(reserved))
      fail("--chat-template-kwargs: '{}' is set by kvlab itself (as apply_chat_template sets it); allowed: any other "
           "name",
           reserved);
}

ChatParts render_checkpoint_chat(const CheckpointChatTemplate& chat, std::string_view context,
                                      std::string_view question, std::string_view system_prompt,
                                      const nlohmann::ordered_json& kwargs) {
  check_template_kwargs(kwargs);
  // A marker no text of ours contains: private-use code points around a fixed tag.
  std::string marker;
  for (int k = 0; marker.empty() || context.find(marker) != std::string_view::npos ||
                  question.find(marker) != std::string_view::npos || system_prompt.find(marker) != std::string_view::npos;
       ++k) {
    marker = fmt::format("\xEE\x80\x80kvlab-context-end-{}\xEE\x80\x81", k);
  }
  auto render = [&](const std::string& content) {
    ordered messages = ordered::array();
    if (!system_prompt.empty()) messages.push_back({{"role", "system"}, {"content", std::string(system_prompt)}});
    messages.push_back({{"role", "user"}, {"content", content}});
    ordered ctx = ordered::object();
    ctx["messages"] = messages;
    ctx["tools"] = nullptr;
    ctx["documents"] = nullptr;
    ctx["add_generation_prompt"] = true;
    ctx["bos_token"] = chat.bos_token;
    ctx["eos_token"] = chat.eos_token;
    for (auto it = kwargs.begin(); it != kwargs.end(); ++it) ctx[it.key()] = it.value();  // kwargs win over the tokens
    try {
      return render_jinja(chat.source, ctx);
    } catch (const Error& e) {
      fail("{}: chat template: {}", chat.origin, e.what());
    }
  };
  const std::string marked = render(std::string(context) + marker + std::string(question));
  const std::size_t n = count_of(marked, marker);
  if (n != 1) fail("{}: chat template: the user content appears {} times in the rendering, expected once", chat.origin, n);
  const std::size_t cut = marked.find(marker);
  ChatParts parts{marked.substr(0, cut), marked.substr(cut + marker.size())};
  const std::string plain = render(std::string(context) + std::string(question));
  if (parts.context_part + parts.question_part != plain) {
    fail("{}: chat template: rendering context and question apart changes the text (the template inspects the "
         "user content); it cannot be split at the context's end",
         chat.origin);
  }
  return parts;
}

}  // namespace kvlab::harness
