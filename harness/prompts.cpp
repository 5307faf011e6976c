#include "harness/prompts.h"

#include <fmt/format.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "core/parse_json.h"
#include "core/read_file.h"

namespace kvlab::harness {
namespace {

bool safe_id(const std::string& id) {
  if (id.empty()) return false;
  for (unsigned char c : id)
    if (!std::isalnum(c) && c != '_' && c != '-' && c != '.') return false;
  return true;
}

std::string string_field(const nlohmann::json& j, const char* key, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return {};
  if (!it->is_string()) fail("{}: '{}' must be a string", where, key);
  return it->get<std::string>();
}

}  // namespace

std::vector<Prompt> load_prompts_jsonl(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open the prompts file", path.string());
  std::vector<Prompt> prompts;
  std::set<std::string> ids;
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = fmt::format("{}:{}", path.string(), number);
    const nlohmann::json j = core::parse_json(line, where);
    if (!j.is_object()) fail("{}: each line must be a JSON object", where);
    Prompt p;
    p.context = string_field(j, "context", where);
    if (p.context.empty()) p.context = string_field(j, "prompt", where);
    if (p.context.empty()) fail("{}: no \"context\" (or \"prompt\") text", where);
    p.question = string_field(j, "question", where);
    p.system = string_field(j, "system", where);
    p.answer_prefix = string_field(j, "answer_prefix", where);
    if (auto it = j.find("answers"); it != j.end() && !it->is_null()) {
      if (!it->is_array()) fail("{}: 'answers' must be a list of strings", where);
      for (const auto& a : *it) {
        if (!a.is_string()) fail("{}: 'answers' must be a list of strings", where);
        p.answers.push_back(a.get<std::string>());
      }
    } else if (const auto answer = string_field(j, "answer", where); !answer.empty()) {
      p.answers.push_back(answer);
    }
    if (auto it = j.find("id"); it != j.end() && !it->is_null())
      p.id = it->is_string() ? it->get<std::string>() : it->dump();
    else
      p.id = fmt::format("s{}", prompts.size());
    if (!safe_id(p.id)) fail("{}: id '{}' may only contain letters, digits, '_', '-' and '.'", where, p.id);
    if (!ids.insert(p.id).second) fail("{}: id '{}' appears twice", where, p.id);
    prompts.push_back(std::move(p));
  }
  if (prompts.empty()) fail("{}: no prompts (expected one JSON object per line)", path.string());
  return prompts;
}

Prompt prompt_from_text(const std::filesystem::path& path, std::string question) {
  Prompt p{.id = "s0", .context = core::read_file(path, "text file"), .question = std::move(question)};
  if (p.context.empty()) fail("{}: the text file is empty", path.string());
  return p;
}

Truncation parse_truncation(std::string_view name) {
  if (name == "end") return Truncation::end;
  if (name == "middle") return Truncation::middle;
  fail("--truncate '{}': expected end or middle", name);
}

Tokenization parse_tokenization(std::string_view name) {
  if (name == "apart") return Tokenization::apart;
  if (name == "whole") return Tokenization::whole;
  fail("--tokenize '{}': expected apart or whole", name);
}

TokenizedPrompt tokenize_prompt(const Tokenizer& tokenizer, const ChatFormat& chat_template, const Prompt& prompt,
                                std::int64_t max_tokens, Truncation truncation, Tokenization tokenization) {
  TokenizedPrompt out;
  const ChatParts parts = render_chat(chat_template, prompt.context, prompt.question, prompt.system);
  out.tokens = tokenization == Tokenization::whole ? encode_chat_whole(tokenizer, chat_template, parts, &out.context_end)
                                                   : encode_chat(tokenizer, chat_template, parts, &out.context_end);
  out.rendered = parts.context_part + parts.question_part;
  out.context_bytes = parts.context_part.size();
  if (!prompt.answer_prefix.empty()) {  // continues the generation prompt: no BOS, no leading-space marker
    const auto prefix = tokenizer.encode_continuation(prompt.answer_prefix);
    out.tokens.insert(out.tokens.end(), prefix.begin(), prefix.end());
  }
  const auto total = static_cast<std::int64_t>(out.tokens.size());
  if (max_tokens <= 0 || total <= max_tokens) return out;
  const std::int64_t question = total - out.context_end;
  if (question >= max_tokens)
    fail("sample '{}': the question part alone is {} tokens, more than --max-tokens {}", prompt.id, question, max_tokens);
  out.dropped = total - max_tokens;
  const std::int64_t keep = out.context_end - out.dropped;  // context tokens kept
  if (keep < 1)  // the context part starts with the BOS / template head: never drop all of it
    fail("sample '{}': --max-tokens {} leaves no room for the context ({} question tokens)", prompt.id, max_tokens,
         question);
  // end: keep the first `keep` context tokens; middle: the first and the last halves (LongBench).
  const std::int64_t head = truncation == Truncation::end ? keep : (keep + 1) / 2;
  out.tokens.erase(out.tokens.begin() + head, out.tokens.begin() + head + out.dropped);
  out.context_end = keep;
  return out;
}

}  // namespace kvlab::harness
