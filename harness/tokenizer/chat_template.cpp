#include "harness/tokenizer/chat_template.h"

#include <fmt/format.h>

#include "core/error.h"
#include "harness/tokenizer/token_offsets.h"

namespace kvlab::harness {
namespace {

// Literal strings of docs/tokenizers.md §7.
constexpr std::string_view kLlama3Head =
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
    "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n";
constexpr std::string_view kLlama3User = "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n";
constexpr std::string_view kLlama3Tail = "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n";
constexpr std::string_view kQwen2DefaultSystem = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";

std::string with_system(std::string_view system_prompt, std::string_view context) {
  if (system_prompt.empty()) return std::string(context);
  return fmt::format("{}\n\n{}", system_prompt, context);
}

}  // namespace

ChatTemplate parse_chat_template(std::string_view name) {
  if (name == "none") return ChatTemplate::none;
  if (name == "llama3") return ChatTemplate::llama3;
  if (name == "qwen2") return ChatTemplate::qwen2;
  if (name == "mistral-v0.2" || name == "mistral-v1") return ChatTemplate::mistral_v1;
  if (name == "mistral-v0.3" || name == "mistral-v3") return ChatTemplate::mistral_v3;
  fail("unknown chat template {:?}; allowed: auto, own, none, llama3, qwen2, mistral-v0.2 (= mistral-v1), mistral-v0.3 "
       "(= mistral-v3)",
       name);
}

std::string_view to_string(ChatTemplate t) {
  switch (t) {
    case ChatTemplate::none: return "none";
    case ChatTemplate::llama3: return "llama3";
    case ChatTemplate::qwen2: return "qwen2";
    case ChatTemplate::mistral_v1: return "mistral-v0.2";
    case ChatTemplate::mistral_v3: return "mistral-v0.3";
    case ChatTemplate::own: return "own";
  }
  return "?";
}

ChatFormat choose_chat_format(const std::filesystem::path& model_dir, std::string_view name,
                              const nlohmann::ordered_json& kwargs) {
  check_template_kwargs(kwargs);
  ChatFormat format;
  if (name == "auto" || name == "own") {
    if (auto own = load_checkpoint_chat_template(model_dir)) {
      format = ChatFormat(std::move(*own));
    } else if (name == "own") {
      fail("--chat-template own: {} ships no chat template (tokenizer_config.json's chat_template, chat_template.jinja "
           "or chat_template.json); a base model takes --chat-template none (or auto)",
           model_dir.string());
    }
  } else {
    format = parse_chat_template(name);
  }
  if (!kwargs.empty() && format.layout != ChatTemplate::own)
    fail("--chat-template-kwargs: the chat template is {} (not a Jinja template), so nothing reads the kwargs; they "
         "need a checkpoint that ships its own template",
         to_string(format.layout));
  format.kwargs = kwargs;
  return format;
}

std::string describe(const ChatFormat& format) {
  std::string out(to_string(format.layout));
  if (!format.kwargs.empty()) out += " " + format.kwargs.dump();
  return out;
}

ChatParts render_chat(const ChatFormat& format, std::string_view context, std::string_view question,
                      std::string_view system_prompt) {
  switch (format.layout) {
    case ChatTemplate::own: {
      if (!format.own) fail("render_chat: the checkpoint's own template was not loaded");
      return render_checkpoint_chat(*format.own, context, question, system_prompt, format.kwargs);
    }
    case ChatTemplate::none:
      return {with_system(system_prompt, context), std::string(question)};
    case ChatTemplate::llama3:
      return {fmt::format("{}{}{}{}", kLlama3Head, system_prompt, kLlama3User, context),
              fmt::format("{}{}", question, kLlama3Tail)};
    case ChatTemplate::qwen2:
      return {fmt::format("<|im_start|>system\n{}<|im_end|>\n<|im_start|>user\n{}",
                          system_prompt.empty() ? kQwen2DefaultSystem : system_prompt, context),
              fmt::format("{}<|im_end|>\n<|im_start|>assistant\n", question)};
    case ChatTemplate::mistral_v1:
      return {fmt::format("<s> [INST] {}", with_system(system_prompt, context)), fmt::format("{} [/INST]", question)};
    case ChatTemplate::mistral_v3:
      return {fmt::format("<s>[INST] {}", with_system(system_prompt, context)), fmt::format("{}[/INST]", question)};
  }
  fail("render_chat: invalid template value {}", static_cast<int>(format.layout));
}

namespace {
// A rendered template carries its BOS (transformers' apply_chat_template encodes it with
// add_special_tokens = False too); a prompt without one gets the tokenizer's.
bool adds_special_tokens(const ChatFormat& t) { return t.layout == ChatTemplate::none; }
}  // namespace

std::vector<std::int32_t> encode_chat(const Tokenizer& tokenizer, const ChatFormat& t, const ChatParts& parts,
                                      std::int64_t* context_end) {
  std::vector<std::int32_t> ids = tokenizer.encode(parts.context_part, adds_special_tokens(t));
  if (context_end) *context_end = static_cast<std::int64_t>(ids.size());
  const std::vector<std::int32_t> question = tokenizer.encode_continuation(parts.question_part);
  ids.insert(ids.end(), question.begin(), question.end());
  return ids;
}

std::vector<std::int32_t> encode_chat_whole(const Tokenizer& tokenizer, const ChatFormat& t, const ChatParts& parts,
                                            std::int64_t* context_end) {
  const std::string text = parts.context_part + parts.question_part;
  std::vector<std::int32_t> ids = tokenizer.encode(text, adds_special_tokens(t));
  if (context_end) {
    const auto spans = token_offsets(tokenizer, ids, text);
    *context_end = static_cast<std::int64_t>(token_at_byte(spans, parts.context_part.size()));
  }
  return ids;
}

}  // namespace kvlab::harness
