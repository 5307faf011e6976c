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
// template, loaded once. A ChatTemplate converts to it, so the literal layouts need no template.
struct ChatFormat {
  ChatTemplate layout = ChatTemplate::none;
  std::shared_ptr<const CheckpointChatTemplate> own;  // set iff layout == own

  ChatFormat(ChatTemplate t = ChatTemplate::none) : layout(t) {}  // NOLINT: implicit on purpose
  explicit ChatFormat(CheckpointChatTemplate t)
      : layout(ChatTemplate::own), own(std::make_shared<const CheckpointChatTemplate>(std::move(t))) {}
};
// The checkpoint's own template (--chat-template own); a kvlab::Error when model_dir ships none.
ChatFormat own_chat_template(const std::filesystem::path& model_dir);

// Accepts "none", "llama3", "qwen2", "mistral-v0.2" or "mistral-v1" (→ mistral_v1),
// "mistral-v0.3" or "mistral-v3" (→ mistral_v3); anything else (also "own", which needs the
// checkpoint: own_chat_template) is a kvlab::Error listing them.
ChatTemplate parse_chat_template(std::string_view name);
// The canonical name: "none", "llama3", "qwen2", "mistral-v0.2", "mistral-v0.3", "own".
std::string_view to_string(ChatTemplate t);

// For "--chat-template auto": reads model_dir/tokenizer_config.json's "chat_template" (absent, a
// string, or a list of {name, template} — the "default" entry, else the first), falling back
// to chat_template.jinja / chat_template.json beside it as newer transformers save them. Its
// markers decide: "<|start_header_id|>" → llama3, "<|im_start|>" → qwen2, "[INST]" → mistral,
// v3 when the tokenizer has "[INST]" as one added/control token (tokenizer_config.json's
// added_tokens_decoder, else the loaded tokenizer), else v1. No chat template → none (a base
// model). A template with none of the markers is an error naming the file and model_type.
ChatTemplate detect_chat_template(const std::filesystem::path& model_dir, std::string_view model_type);

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

}  // namespace kvlab::harness
