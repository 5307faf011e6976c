// Chat templates against the literal strings of docs/tokenizers.md §7, the double-BOS rule of
// §8, and detect_chat_template on tokenizer_config.json files written the way checkpoints do.
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
  const auto format = own_chat_template(dir_->path() / "llama");
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
    own_chat_template(dir.path());
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("ships no chat template"));
  }
  EXPECT_THROW(parse_chat_template("own"), Error);  // it needs the checkpoint: own_chat_template
  EXPECT_THROW(render_chat(ChatTemplate::own, "c", "q"), Error);  // no template loaded
}

TEST(DetectChatTemplate, FromTokenizerConfigFiles) {
  TempDir dir;
  EXPECT_EQ(detect_chat_template(dir.path(), "llama"), ChatTemplate::none);  // no config at all
  write_config(dir, {{"bos_token", "<|begin_of_text|>"}});
  EXPECT_EQ(detect_chat_template(dir.path(), "llama"), ChatTemplate::none);  // a base model
  write_config(dir, {{"chat_template", "{{ bos_token }}<|start_header_id|>{{ m['role'] }}<|end_header_id|>"}});
  EXPECT_EQ(detect_chat_template(dir.path(), "llama"), ChatTemplate::llama3);
  write_config(dir, {{"chat_template", json::array({json{{"name", "tool_use"}, {"template", "[INST] tools"}},
                                                    json{{"name", "default"}, {"template", "<|im_start|>{{ x }}"}}})}});
  EXPECT_EQ(detect_chat_template(dir.path(), "qwen2"), ChatTemplate::qwen2);
  // Mistral: v3 when "[INST]" is one added token, v1 when it is plain text.
  const json inst = {{"content", "[INST]"}, {"special", true}};
  write_config(dir, {{"chat_template", "{{ bos_token }}[INST] {{ c }} [/INST]"},
                     {"added_tokens_decoder", {{"1", {{"content", "<s>"}}}, {"3", inst}}}});
  EXPECT_EQ(detect_chat_template(dir.path(), "mistral"), ChatTemplate::mistral_v3);
  write_config(dir, {{"chat_template", "{{ bos_token }}[INST] {{ c }} [/INST]"},
                     {"added_tokens_decoder", {{"1", {{"content", "<s>"}}}}}});
  EXPECT_EQ(detect_chat_template(dir.path(), "mistral"), ChatTemplate::mistral_v1);
}

TEST(DetectChatTemplate, MistralWithoutAddedTokensAsksTheTokenizer) {
  TempDir dir;
  write_tiny_tokenizer(dir.path(), "mistral", testing::project_corpus(), 600, 0);
  write_config(dir, {{"chat_template", "[INST] {{ c }}[/INST]"}});
  EXPECT_EQ(detect_chat_template(dir.path(), "mistral"), ChatTemplate::mistral_v3);  // [INST] is a control piece
}

TEST(DetectChatTemplate, JinjaFileAndErrors) {
  TempDir dir;
  dir.write("chat_template.jinja", "<|im_start|>{{ m }}<|im_end|>");
  EXPECT_EQ(detect_chat_template(dir.path(), "qwen2"), ChatTemplate::qwen2);
  write_config(dir, {{"chat_template", "{{ messages }}"}});
  try {
    detect_chat_template(dir.path(), "gemma");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("tokenizer_config.json"));
    EXPECT_THAT(e.what(), HasSubstr("\"gemma\""));
  }
  dir.write("tokenizer_config.json", "{not json");
  EXPECT_THROW(detect_chat_template(dir.path(), "llama"), Error);
}

}  // namespace
}  // namespace kvlab::harness
