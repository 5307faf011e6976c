// The checkpoint's own chat template, read and rendered for one user turn the way
// transformers' apply_chat_template renders it, split into the context part and the question
// part that kvlab tokenizes separately (chat_template.h: --chat-template own).
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace kvlab::harness {

struct CheckpointChatTemplate {
  std::string source;     // the Jinja text
  std::string origin;     // the file it came from, for error messages
  std::string bos_token;  // tokenizer_config.json's bos_token / eos_token ("" when absent),
  std::string eos_token;  // which apply_chat_template passes to every template
};

// model_dir/tokenizer_config.json's "chat_template" (a string, or a list of {name, template}:
// the "default" entry, else the first), else chat_template.jinja, else chat_template.json
// beside it. nullopt when there is none (a base model). Malformed files are a kvlab::Error.
std::optional<CheckpointChatTemplate> load_checkpoint_chat_template(const std::filesystem::path& model_dir);

// A rendered prompt cut where the context ends; chat_template.h's render_chat gives it for every
// template, this file's render_checkpoint_chat for the checkpoint's own.
struct ChatParts {
  std::string context_part;   // template head (BOS, system block, user header) + context
  std::string question_part;  // question + template tail (end of turn, generation prompt)
};

// Template kwargs (--chat-template-kwargs): a JSON object such as {"enable_thinking": false}, text
// "" meaning none. Anything else is a kvlab::Error naming the option, with an example.
nlohmann::ordered_json parse_template_kwargs(std::string_view json_text);
// A kvlab::Error unless `kwargs` is a JSON object without the names apply_chat_template sets
// itself (messages, tools, documents, add_generation_prompt, continue_final_message: passing one
// of them to transformers is a TypeError, "got multiple values for keyword argument").
void check_template_kwargs(const nlohmann::ordered_json& kwargs);

// Renders the template with the variables transformers' apply_chat_template passes
// (tokenization_utils_base.py: template_kwargs = {**special_tokens_map, **kwargs}, then
// chat_template_utils.py render_jinja_template: render(messages=, tools=, documents=,
// add_generation_prompt=, **template_kwargs)): messages = [{system, system_prompt} if not empty,
// {user, context + question}], tools = documents = None, add_generation_prompt = true, bos_token
// and eos_token, and `kwargs` on top (they may replace bos_token / eos_token, as in transformers),
// and cuts it where the context ends: the user content is
// rendered as context + marker + question, so filters such as `| trim` act on the whole
// content as transformers applies them, and the marker's position is the cut. Checks that the
// two parts joined equal the rendering without the marker; kvlab::Error when they do not (a
// template that inspects the content), when the marker is not found exactly once, or when the
// template raises (e.g. Gemma refusing a system turn).
ChatParts render_checkpoint_chat(const CheckpointChatTemplate& chat, std::string_view context,
                                      std::string_view question, std::string_view system_prompt = {},
                                      const nlohmann::ordered_json& kwargs = nlohmann::ordered_json::object());

}  // namespace kvlab::harness
