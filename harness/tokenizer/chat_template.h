// Chat templates as literal strings for one user turn with the generation prompt
// (docs/tokenizers.md §7), rendered so that the context and the question stay apart: peers
// tokenize the two separately, and the context/question token boundary must be exact.
//
// Double BOS (docs/tokenizers.md §8): the rendered text of every template except `none` already
// contains the BOS literal (<|begin_of_text|>, <s>), and added/special tokens in the text are
// always matched, so it must be encoded with add_special = false — encode_chat does that. kvlab
// decides this way for every run (one BOS); RULER's HF wrapper, which encodes such prompts with
// add_special_tokens = true, gets two on Llama-3.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "harness/tokenizer/jinja_chat.h"
#include "harness/tokenizer/tokenizer.h"

namespace kvlab::harness {

enum class ChatTemplate {
  none,        // base model: context and question unchanged, BOS from the tokenizer
  llama3,      // Llama-3.1-Instruct, date pinned to "26 Jul 2024"
  qwen2,       // Qwen2/2.5-Instruct, default system prompt when none is given
  mistral_v1,  // Mistral v0.1/v0.2-Instruct: "<s> [INST] ... [/INST]", [INST] as plain text
  mistral_v3,  // Mistral v0.3-Instruct: "<s>[INST] ...[/INST]", [INST]/[/INST] control tokens
  own,         // the checkpoint's own Jinja template (jinja_chat.h), rendered as transformers does
};

// What renders a prompt: one of the literal layouts above, or (layout == own) the checkpoint's
// template, loaded once, with the template kwargs it is rendered with. A ChatTemplate converts
// to it, so the literal layouts need no template.
struct ChatFormat {
  ChatTemplate layout = ChatTemplate::none;
  std::shared_ptr<const CheckpointChatTemplate> own;  // set iff layout == own
  // Extra template variables (--chat-template-kwargs, e.g. {"enable_thinking": false}); only a
  // Jinja template (layout == own) takes them. A JSON object.
  nlohmann::ordered_json kwargs = nlohmann::ordered_json::object();

  ChatFormat(ChatTemplate t = ChatTemplate::none) : layout(t) {}  // NOLINT: implicit on purpose
  explicit ChatFormat(CheckpointChatTemplate t)
      : layout(ChatTemplate::own), own(std::make_shared<const CheckpointChatTemplate>(std::move(t))) {}
};
// Accepts "none", "llama3", "qwen2", "mistral-v0.2" or "mistral-v1" (→ mistral_v1),
// "mistral-v0.3" or "mistral-v3" (→ mistral_v3); anything else (also "own" and "auto", which
// need the checkpoint: choose_chat_format) is a kvlab::Error listing them.
ChatTemplate parse_chat_template(std::string_view name);
// The canonical name: "none", "llama3", "qwen2", "mistral-v0.2", "mistral-v0.3", "own".
std::string_view to_string(ChatTemplate t);

// The --chat-template rule. "auto": the checkpoint's own template when it ships one
// (load_checkpoint_chat_template: tokenizer_config.json's "chat_template", the "default" entry of
// a list of named templates, else chat_template.jinja / chat_template.json), rendered as
// transformers' apply_chat_template renders it; none when it ships none (a base model: the
// literal layouts are never guessed). "own": the same, but an error when there is none. Any other
// name: parse_chat_template's literal layout, for checkpoints that ship no template. `kwargs`
// (a JSON object, check_template_kwargs) go to a Jinja template; with a literal layout or none
// they are an error, since nothing would read them.
ChatFormat choose_chat_format(const std::filesystem::path& model_dir, std::string_view name,
                              const nlohmann::ordered_json& kwargs = nlohmann::ordered_json::object());

// The provenance string of dumps and eval.json: "own", "none", "llama3", ... followed by the
// template kwargs as compact JSON when there are any (`own {"enable_thinking":false}`).
std::string describe(const ChatFormat& format);

// ChatParts (context part, question part) is declared in jinja_chat.h, which renders the
// checkpoint's own template into it.

// The user turn's content is context + question, inserted verbatim (HF's Llama-3.1 template
// also trims it; callers wanting that trim first). system_prompt: Llama-3.1 puts it after the
// knowledge-cutoff lines of its system block; Qwen2 uses it instead of its default; Mistral
// prepends it to the user content followed by "\n\n" (mistral-common's single-turn layout,
// unverified); `none` puts it before the context followed by "\n\n". `own` renders the
// checkpoint's template as transformers would (system turn, user turn, generation prompt) and
// cuts it at the context's end (render_checkpoint_chat; `| trim` and the like act on the whole
// user content, as in transformers).
ChatParts render_chat(const ChatFormat& t, std::string_view context, std::string_view question,
                      std::string_view system_prompt = {});

// The ids of context_part followed by question_part, encoded separately so that
// *context_end (when non-null) is exactly the number of context ids. Rendered templates are
// encoded with add_special = false (they carry their BOS literal); `none` gets add_special =
// true on the context part only. The question part is encoded as a continuation
// (Tokenizer::encode_continuation: no BOS, no sentencepiece dummy prefix).
std::vector<std::int32_t> encode_chat(const Tokenizer& tokenizer, const ChatFormat& t, const ChatParts& parts,
                                      std::int64_t* context_end);
// The joined parts encoded at once (--tokenize whole), with the same special-token rule;
// *context_end is the index of the token that holds the question part's first byte (found by
// token_offsets), so a token that straddles the boundary counts as question.
std::vector<std::int32_t> encode_chat_whole(const Tokenizer& tokenizer, const ChatFormat& t, const ChatParts& parts,
                                            std::int64_t* context_end);

}  // namespace kvlab::harness
