// Chat templates against the literal strings of docs/tokenizers.md §7, the double-BOS rule of
// §8, and the --chat-template rule (choose_chat_format) on tokenizer_config.json files written the
// way checkpoints do.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "harness/tokenizer/chat_template.h"
#include "harness/tokenizer/test_util.h"
#include "harness/tokenizer/tiny_tokenizer.h"

namespace kvlab::harness {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;
using testing::TempDir;

std::string joined(const ChatParts& p) { return p.context_part + p.question_part; }

TEST(ChatTemplate, LiteralStringsOfModelsMd) {
  // {content} = context + question.
  EXPECT_EQ(joined(render_chat(ChatTemplate::llama3, "CTX ", "Q?")),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
            "Today Date: 26 Jul 2024\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nCTX Q?<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(joined(render_chat(ChatTemplate::qwen2, "CTX ", "Q?")),
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
            "<|im_start|>user\nCTX Q?<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(joined(render_chat(ChatTemplate::mistral_v1, "CTX ", "Q?")), "<s> [INST] CTX Q? [/INST]");
  EXPECT_EQ(joined(render_chat(ChatTemplate::mistral_v3, "CTX ", "Q?")), "<s>[INST] CTX Q?[/INST]");
  const ChatParts none = render_chat(ChatTemplate::none, "CTX ", "Q?");
  EXPECT_EQ(none.context_part, "CTX ");
  EXPECT_EQ(none.question_part, "Q?");
}

TEST(ChatTemplate, PartsSplitBetweenContextAndQuestion) {
  const ChatParts p = render_chat(ChatTemplate::qwen2, "CTX", "Q");
  EXPECT_TRUE(p.context_part.ends_with("user\nCTX"));
  EXPECT_TRUE(p.question_part.starts_with("Q<|im_end|>"));
}

TEST(ChatTemplate, SystemPrompts) {
  EXPECT_THAT(joined(render_chat(ChatTemplate::llama3, "C", "Q", "Be brief.")),
              HasSubstr("Today Date: 26 Jul 2024\n\nBe brief.<|eot_id|>"));
  EXPECT_THAT(joined(render_chat(ChatTemplate::qwen2, "C", "Q", "Be brief.")),
              HasSubstr("<|im_start|>system\nBe brief.<|im_end|>"));
  EXPECT_EQ(joined(render_chat(ChatTemplate::mistral_v3, "C", "Q", "Be brief.")), "<s>[INST] Be brief.\n\nCQ[/INST]");
}

TEST(ChatTemplate, NamesParseAndPrint) {
  for (const auto t : {ChatTemplate::none, ChatTemplate::llama3, ChatTemplate::qwen2, ChatTemplate::mistral_v1,
                       ChatTemplate::mistral_v3}) {
    EXPECT_EQ(parse_chat_template(to_string(t)), t);
  }
  EXPECT_EQ(parse_chat_template("mistral-v1"), ChatTemplate::mistral_v1);
  EXPECT_EQ(parse_chat_template("mistral-v3"), ChatTemplate::mistral_v3);
  try {
    parse_chat_template("llama2");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("\"llama2\""));
    EXPECT_THAT(e.what(), HasSubstr("none, llama3, qwen2, mistral-v0.2"));
  }
}

class ChatEncoding : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir;
    write_tiny_tokenizer(dir_->path() / "llama", "llama", testing::project_corpus(), 512, 0);
    write_tiny_tokenizer(dir_->path() / "qwen2", "qwen2", testing::project_corpus(), 512, 0);
  }
  static void TearDownTestSuite() { delete dir_; }
  static inline TempDir* dir_ = nullptr;
};

TEST_F(ChatEncoding, Llama3GetsExactlyOneBos) {
  const auto tok = load_tokenizer(dir_->path() / "llama");
  const std::int32_t bos = *tok->bos_id();
  const ChatParts parts = render_chat(ChatTemplate::llama3, "The cache grows.\n\n", "What grows?");
  std::int64_t context_end = -1;
  const auto ids = encode_chat(*tok, ChatTemplate::llama3, parts, &context_end);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), bos), 1);
  EXPECT_EQ(ids.front(), bos);
  // The pitfall encode_chat avoids: the rendered text with add_special = true has two.
  const auto doubled = tok->encode(parts.context_part, /*add_special=*/true);
  EXPECT_EQ(std::count(doubled.begin(), doubled.end(), bos), 2);
  // The boundary: the first context_end ids are the context part's alone.
  const auto context_ids = tok->encode(parts.context_part, false);
  ASSERT_EQ(context_end, static_cast<std::int64_t>(context_ids.size()));
  EXPECT_TRUE(std::equal(context_ids.begin(), context_ids.end(), ids.begin()));
  EXPECT_EQ(tok->decode(ids), joined(parts));
}

TEST_F(ChatEncoding, NoneAddsTheBosOnceOnTheContext) {
  const auto llama = load_tokenizer(dir_->path() / "llama");
  std::int64_t context_end = -1;
  const auto ids = encode_chat(*llama, ChatTemplate::none, render_chat(ChatTemplate::none, "Context.", " Question?"), &context_end);
  EXPECT_EQ(ids.front(), *llama->bos_id());
  EXPECT_EQ(std::count(ids.begin(), ids.end(), *llama->bos_id()), 1);
  EXPECT_EQ(context_end, static_cast<std::int64_t>(llama->encode("Context.").size()));
  // Qwen2 has no BOS: nothing is added.
  const auto qwen = load_tokenizer(dir_->path() / "qwen2");
  EXPECT_EQ(encode_chat(*qwen, ChatTemplate::none, render_chat(ChatTemplate::none, "Context.", " Question?"), nullptr),
            qwen->encode("Context. Question?", false));
}

// A folder with tokenizer_config.json = `config`.
void write_config(const TempDir& dir, const json& config) { dir.write("tokenizer_config.json", config.dump()); }

// --chat-template own: the tiny llama family's template (tiny_tokenizer.cpp: BOS, a header per
// turn, the content `| trim`med, the generation prompt; its `{%- endif %}` strips the prompt's
// trailing blank line, as jinja2 does), rendered by hand below. The trim acts on
// the whole user content (leading spaces of the context, the question's trailing newline), as
// transformers applies it, and the cut falls where the context ends.
TEST_F(ChatEncoding, OwnTemplateRendersTheCheckpointsJinjaAndCutsAtTheContext) {
  const auto format = choose_chat_format(dir_->path() / "llama", "own");
  ASSERT_EQ(format.layout, ChatTemplate::own);
  EXPECT_EQ(to_string(format.layout), "own");
  const ChatParts parts = render_chat(format, "  The cache grows.\n\n", "What grows?\n");
  EXPECT_EQ(parts.context_part, "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nThe cache grows.\n\n");
  EXPECT_EQ(parts.question_part, "What grows?<|eot_id|><|start_header_id|>assistant<|end_header_id|>");
  // One BOS (the template's), and the boundary is the context part's own ids.
  const auto tok = load_tokenizer(dir_->path() / "llama");
  std::int64_t context_end = -1;
  const auto ids = encode_chat(*tok, format, parts, &context_end);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), *tok->bos_id()), 1);
  EXPECT_EQ(context_end, static_cast<std::int64_t>(tok->encode(parts.context_part, false).size()));
  EXPECT_EQ(tok->decode(ids), joined(parts));
}

TEST(ChatTemplate, OwnNeedsATemplateAndIsNotANamedLayout) {
  TempDir dir;
  write_config(dir, {{"bos_token", "<s>"}});
  try {
    choose_chat_format(dir.path(), "own");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("ships no chat template"));
  }
  EXPECT_THROW(parse_chat_template("own"), Error);  // it needs the checkpoint: choose_chat_format
  EXPECT_THROW(render_chat(ChatTemplate::own, "c", "q"), Error);  // no template loaded
}

// --chat-template auto is the checkpoint's own template (the "default" of a list of named
// templates, else chat_template.jinja), none for a base model; own is the same but refuses a
// base model; the literal layouts only by name.
TEST(ChooseChatFormat, AutoIsTheCheckpointsOwnTemplate) {
  TempDir dir;
  EXPECT_EQ(choose_chat_format(dir.path(), "auto").layout, ChatTemplate::none);  // no config at all
  write_config(dir, {{"bos_token", "<|begin_of_text|>"}});
  EXPECT_EQ(choose_chat_format(dir.path(), "auto").layout, ChatTemplate::none);  // a base model
  try {
    choose_chat_format(dir.path(), "own");
    ADD_FAILURE() << "own on a base model: no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("ships no chat template"));
  }
  EXPECT_EQ(choose_chat_format(dir.path(), "llama3").layout, ChatTemplate::llama3);  // named layouts stay
  write_config(dir, {{"bos_token", "<s>"},
                     {"chat_template", json::array({json{{"name", "tool_use"}, {"template", "T{{ messages }}"}},
                                                    json{{"name", "default"}, {"template", "D{{ bos_token }}"
                                                                                          "{{ messages[0].content }}"}}})}});
  for (const char* name : {"auto", "own"}) {
    const ChatFormat f = choose_chat_format(dir.path(), name);
    ASSERT_EQ(f.layout, ChatTemplate::own) << name;
    EXPECT_EQ(joined(render_chat(f, "CTX ", "Q?")), "D<s>CTX Q?") << name;
    EXPECT_EQ(describe(f), "own");
  }
  write_config(dir, {{"bos_token", "<s>"}});
  dir.write("chat_template.jinja", "J{{ messages[0].content }}");
  EXPECT_EQ(joined(render_chat(choose_chat_format(dir.path(), "auto"), "C", "Q")), "JCQ");
  dir.write("tokenizer_config.json", "{not json");
  EXPECT_THROW(choose_chat_format(dir.path(), "auto"), Error);
}

TEST(ChooseChatFormat, KwargsGoToTheTemplateAndIntoItsDescription) {
  TempDir dir;
  write_config(dir, {{"chat_template", "{% if enable_thinking is false %}/no_think {% endif %}{{ messages[0].content }}"}});
  const nlohmann::ordered_json off = nlohmann::ordered_json::parse(R"({"enable_thinking": false})");
  const ChatFormat f = choose_chat_format(dir.path(), "auto", off);
  EXPECT_EQ(joined(render_chat(f, "C", "Q")), "/no_think CQ");
  EXPECT_EQ(joined(render_chat(choose_chat_format(dir.path(), "auto"), "C", "Q")), "CQ");
  EXPECT_EQ(describe(f), R"(own {"enable_thinking":false})");
  // A literal layout has no template to read them.
  try {
    choose_chat_format(dir.path(), "qwen2", off);
    ADD_FAILURE() << "kwargs with a literal layout: no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("--chat-template-kwargs"));
  }
}

}  // namespace
}  // namespace kvlab::harness
