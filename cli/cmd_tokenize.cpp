// kvlab tokenize: what a checkpoint's tokenizer and chat template make of a text — the rendered
// prompt, its token ids, pieces and byte offsets, and the context/question boundary a dump would
// record — or, with --decode, the text of given ids. It runs the dump's own prompt code
// (harness/prompts.h tokenize_prompt), so what it shows is what `kvlab dump` and `kvlab eval` feed
// the model.
#include <fmt/format.h>

#include <cctype>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/model_run_options.h"
#include "core/error.h"
#include "core/read_file.h"
#include "harness/model_run_request.h"
#include "harness/prompts.h"
#include "harness/tokenizer/chat_template.h"
#include "harness/tokenizer/jinja_chat.h"
#include "harness/tokenizer/token_offsets.h"
#include "harness/tokenizer/tokenizer.h"
#include "harness/tokenizer/utf8.h"

namespace kvlab::cli {
namespace {

struct TokenizeOptions {
  harness::ModelRunRequest run;  // model, chat_template, chat_template_kwargs, tokenize
  std::string text;
  std::filesystem::path file;
  std::string question;
  std::string system;
  bool decode = false;
  bool skip_special = false;
  bool json = false;
};

using ordered = nlohmann::ordered_json;

std::string input_text(const TokenizeOptions& o) {
  if (o.text.empty() == o.file.empty()) fail("give exactly one of TEXT and --file FILE");
  return o.file.empty() ? o.text : core::read_file(o.file, "input file");
}

// "1 2 3", "1,2,3" or "[1, 2, 3]": integers separated by anything else that is not a sign.
std::vector<std::int32_t> parse_ids(const std::string& text) {
  std::vector<std::int32_t> ids;
  for (std::size_t i = 0; i < text.size();) {
    if (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '-') {
      std::size_t end = i + 1;
      while (end < text.size() && std::isdigit(static_cast<unsigned char>(text[end]))) ++end;
      const std::string number = text.substr(i, end - i);
      long long v = 0;
      try {
        v = std::stoll(number);
      } catch (const std::exception&) {
        fail("--decode: '{}' is not a token id", number);
      }
      if (v < 0 || v > INT32_MAX) fail("--decode: token id {} is outside [0, 2^31)", number);
      ids.push_back(static_cast<std::int32_t>(v));
      i = end;
    } else if (std::isspace(static_cast<unsigned char>(text[i])) || text[i] == ',' || text[i] == '[' || text[i] == ']') {
      ++i;
    } else {
      fail("--decode: expected token ids such as '128000 791 6546' or '[128000, 791]', found {:?} at byte {}",
           std::string(1, text[i]), i);
    }
  }
  if (ids.empty()) fail("--decode: no token ids given");
  return ids;
}

std::string json_quoted(std::string_view s) { return ordered(harness::utf8_lossy(s)).dump(); }

void run_decode(const TokenizeOptions& o, const harness::Tokenizer& tokenizer) {
  const std::string text = tokenizer.decode(parse_ids(input_text(o)), o.skip_special);
  if (o.json) {
    fmt::print("{}\n", ordered{{"tokenizer", tokenizer.describe()}, {"text", text}}.dump(2));
  } else {
    fmt::print("{}\n", text);
  }
}

void run_encode(const TokenizeOptions& o, const harness::Tokenizer& tokenizer) {
  const harness::ChatFormat chat = harness::choose_chat_format(o.run.model, o.run.chat_template,
                                                               harness::parse_template_kwargs(o.run.chat_template_kwargs));
  const harness::Prompt prompt{.id = "s0", .context = input_text(o), .question = o.question, .system = o.system};
  const harness::Tokenization tokenization = harness::parse_tokenization(o.run.tokenize);
  const auto t = harness::tokenize_prompt(tokenizer, chat, prompt, /*max_tokens=*/0, harness::Truncation::end, tokenization);
  const auto spans = harness::token_offsets(tokenizer, t.tokens, t.rendered);
  const auto n = static_cast<std::int64_t>(t.tokens.size());
  if (o.json) {
    ordered tokens = ordered::array();
    for (std::size_t i = 0; i < t.tokens.size(); ++i) {
      tokens.push_back({{"id", t.tokens[i]}, {"piece", tokenizer.token(t.tokens[i])}, {"begin", spans[i].begin},
                        {"end", spans[i].end},
                        {"text", harness::utf8_lossy(std::string_view(t.rendered).substr(spans[i].begin, spans[i].end - spans[i].begin))}});
    }
    const ordered out = {{"tokenizer", tokenizer.describe()}, {"chat_template", harness::describe(chat)},
                         {"tokenize", o.run.tokenize},        {"rendered", t.rendered},
                         {"context_bytes", t.context_bytes},  {"context_end", t.context_end},
                         {"tokens", tokens}};
    fmt::print("{}\n", out.dump(2, ' ', false, ordered::error_handler_t::replace));
    return;
  }
  fmt::print("tokenizer: {}\nchat template: {}\ntokenize: {}\n", tokenizer.describe(), harness::describe(chat), o.run.tokenize);
  fmt::print("rendered prompt ({} bytes; the context part is bytes [0, {})):\n{}\n", t.rendered.size(), t.context_bytes,
             json_quoted(t.rendered));
  fmt::print("{} tokens: context [0, {}), question [{}, {}) — a dump's context_end is {}\n", n, t.context_end,
             t.context_end, n, t.context_end);
  fmt::print("{:>6} {:>8} {:>15}  {}\n", "index", "id", "bytes", "piece → text");
  for (std::int64_t i = 0; i < n; ++i) {
    if (i == t.context_end) fmt::print("{:-^60}\n", " question ");
    const auto& s = spans[static_cast<std::size_t>(i)];
    fmt::print("{:>6} {:>8} {:>15}  {} → {}\n", i, t.tokens[static_cast<std::size_t>(i)], fmt::format("[{}, {})", s.begin, s.end),
               json_quoted(tokenizer.token(t.tokens[static_cast<std::size_t>(i)])),
               json_quoted(std::string_view(t.rendered).substr(s.begin, s.end - s.begin)));
  }
}

}  // namespace

void add_tokenize(CLI::App& app, Action& action) {
  auto o = std::make_shared<TokenizeOptions>();
  auto* cmd = app.add_subcommand("tokenize", "Show how a model's tokenizer and chat template turn a text into tokens");
  cmd->footer(
      "The text becomes the context of one prompt (add --question and --system as a dump's prompt file\n"
      "would carry them), is rendered with the chat template and tokenized exactly as `kvlab dump` and\n"
      "`kvlab eval` do it. Printed: the rendered prompt, every token's id, vocabulary piece and byte\n"
      "range [begin, end) in the rendered prompt, and the context/question boundary (the dump's\n"
      "context_end: tokens before it are the context a compressor sees). With --tokenize apart (the\n"
      "default, as kvpress) the context and question parts are tokenized separately; with whole the\n"
      "prompt at once, and the token holding the question's first byte starts the question.\n\n"
      "--decode reads token ids instead (\"1 2 3\", \"1,2,3\" or \"[1, 2, 3]\") and prints their text, cleaned up\n"
      "when tokenizer_config.json sets clean_up_tokenization_spaces.\n\n"
      "A text that starts with '-' goes after `--`.\n\n"
      "Examples:\n"
      "  kvlab tokenize --model Qwen3-8B --question ' What is it?' 'A long document.'\n"
      "  kvlab tokenize --model Qwen3-8B --chat-template-kwargs '{\"enable_thinking\": false}' --file doc.txt --json\n"
      "  kvlab tokenize --model Llama-3.1-8B-Instruct --chat-template none 'raw text, BOS added by the tokenizer'\n"
      "  kvlab tokenize --model Llama-3.1-8B-Instruct --decode '128000 791 6546'");
  cmd->add_option("--model", o->run.model, "Model folder with tokenizer.json or tokenizer.model")->required();
  add_chat_template_options(*cmd, o->run);
  add_tokenize_option(*cmd, o->run);
  cmd->add_option("text", o->text, "The text (the prompt's context), or with --decode the token ids");
  cmd->add_option("--file", o->file, "Read the text (or the ids) from this file instead")->check(CLI::ExistingFile);
  cmd->add_option("--question", o->question, "Question asked after the context, as in a prompts file");
  cmd->add_option("--system", o->system, "System prompt, as in a prompts file");
  cmd->add_flag("--decode", o->decode, "Decode token ids to text instead");
  cmd->add_flag("--skip-special", o->skip_special, "With --decode: leave special tokens out");
  cmd->add_flag("--json", o->json, "Print JSON instead of a table");
  cmd->callback([o, &action] {
    action = [o] {
      const auto tokenizer = harness::load_tokenizer(o->run.model);
      if (o->decode) {
        run_decode(*o, *tokenizer);
      } else {
        if (o->skip_special) fail("--skip-special goes with --decode");
        run_encode(*o, *tokenizer);
      }
    };
  });
}

}  // namespace kvlab::cli
