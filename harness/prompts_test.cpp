// Prompt files and tokenization with a boundary. Oracles: the tokenizer itself (the tokens of
// the parts encoded separately) and hand-counted truncation arithmetic.
#include "harness/prompts.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "harness/tiny_corpus.h"
#include "harness/tokenizer/tiny_tokenizer.h"

namespace kvlab::harness {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class Prompts : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / fmt::format("kvlab_prompts_{}_{}",
                                                   ::testing::UnitTest::GetInstance()->current_test_info()->name(), ::getpid());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name, std::ios::binary) << text;
    return dir_ / name;
  }
  std::string error_of(const std::string& text) {
    try {
      load_prompts_jsonl(write("bad.jsonl", text));
    } catch (const Error& e) {
      return e.what();
    }
    return "no error";
  }
  fs::path dir_;
};

TEST_F(Prompts, JsonlFieldsDefaultsAndBlankLines) {
  const auto p = load_prompts_jsonl(write("p.jsonl", "{\"context\": \"a\", \"question\": \"q?\"}\n\n"
                                                     "{\"prompt\": \"b\", \"id\": \"x-1\", \"system\": \"sys\"}\n"
                                                     "{\"context\": \"c\", \"id\": 7, \"answer\": \"x\"}\n"
                                                     "{\"context\": \"d\", \"answers\": [\"u\", \"v\"], \"answer_prefix\": \"A:\"}\n"));
  ASSERT_EQ(p.size(), 4u);
  EXPECT_EQ(p[0].id, "s0");
  EXPECT_EQ(p[0].question, "q?");
  EXPECT_EQ(p[1].id, "x-1");
  EXPECT_EQ(p[1].context, "b");
  EXPECT_EQ(p[1].system, "sys");
  EXPECT_EQ(p[2].id, "7");
  EXPECT_EQ(p[2].answers, (std::vector<std::string>{"x"}));
  EXPECT_EQ(p[3].answers, (std::vector<std::string>{"u", "v"}));
  EXPECT_EQ(p[3].answer_prefix, "A:");
  EXPECT_TRUE(p[0].answers.empty());
}

TEST_F(Prompts, JsonlErrorsNameTheLine) {
  EXPECT_THAT(error_of("{\"context\": \"a\"}\n{oops\n"), HasSubstr("bad.jsonl:2: not valid JSON"));
  EXPECT_THAT(error_of("{\"question\": \"a\"}\n"), HasSubstr(":1: no \"context\""));
  EXPECT_THAT(error_of("{\"context\": \"a\", \"id\": \"a/b\"}\n"), HasSubstr("id 'a/b'"));
  EXPECT_THAT(error_of("{\"context\": \"a\", \"id\": \"z\"}\n{\"context\": \"b\", \"id\": \"z\"}\n"),
              HasSubstr(":2: id 'z' appears twice"));
  EXPECT_THAT(error_of("{\"context\": 3}\n"), HasSubstr("'context' must be a string"));
  EXPECT_THAT(error_of("{\"context\": \"a\", \"answers\": \"x\"}\n"), HasSubstr("'answers' must be a list"));
  EXPECT_THAT(error_of("\n\n"), HasSubstr("no prompts"));
}

TEST_F(Prompts, TokenizedPartsKeepTheBoundaryAndTruncateOnlyTheContext) {
  write_tiny_tokenizer(dir_, "llama", tiny_corpus(), 400, 0);
  const auto tokenizer = load_tokenizer(dir_);
  const Prompt p{.id = "s0",
                 .context = "The cache of every layer is dumped to HDF5 as the prefill runs, one layer at a time.",
                 .question = "What is dumped?"};
  for (auto t : {ChatTemplate::none, ChatTemplate::llama3}) {
    const auto full = tokenize_prompt(*tokenizer, t, p, 0, Truncation::end);
    std::int64_t context_end = 0;
    const auto expected = encode_chat(*tokenizer, t, render_chat(t, p.context, p.question, p.system), &context_end);
    EXPECT_EQ(full.tokens, expected);
    EXPECT_EQ(full.context_end, context_end);
    EXPECT_EQ(std::count(full.tokens.begin(), full.tokens.end(), *tokenizer->bos_id()), 1);  // one BOS, first
    EXPECT_EQ(full.tokens.front(), *tokenizer->bos_id());

    const std::int64_t cut = 5, max = static_cast<std::int64_t>(full.tokens.size()) - cut;
    const auto end = tokenize_prompt(*tokenizer, t, p, max, Truncation::end);
    const auto middle = tokenize_prompt(*tokenizer, t, p, max, Truncation::middle);
    for (const auto* r : {&end, &middle}) {
      EXPECT_EQ(static_cast<std::int64_t>(r->tokens.size()), max);
      EXPECT_EQ(r->dropped, cut);
      EXPECT_EQ(r->context_end, full.context_end - cut);
      // The question part is intact.
      EXPECT_TRUE(std::equal(r->tokens.begin() + r->context_end, r->tokens.end(), full.tokens.begin() + full.context_end));
    }
    // end keeps the context's first tokens; middle its first ⌈k/2⌉ and last ⌊k/2⌋.
    EXPECT_TRUE(std::equal(end.tokens.begin(), end.tokens.begin() + end.context_end, full.tokens.begin()));
    const std::int64_t k = middle.context_end, head = (k + 1) / 2;
    EXPECT_TRUE(std::equal(middle.tokens.begin(), middle.tokens.begin() + head, full.tokens.begin()));
    EXPECT_TRUE(std::equal(middle.tokens.begin() + head, middle.tokens.begin() + k,
                           full.tokens.begin() + full.context_end - (k - head)));
    // A limit the question alone exceeds is an error, not a silent cut.
    EXPECT_THROW(tokenize_prompt(*tokenizer, t, p, full.tokens.size() - full.context_end, Truncation::end), Error);
  }
}

TEST_F(Prompts, AnswerPrefixContinuesTheQuestionPart) {
  write_tiny_tokenizer(dir_, "llama", tiny_corpus(), 400, 0);
  const auto tokenizer = load_tokenizer(dir_);
  Prompt p{.id = "s0", .context = "Some context about caches.", .question = "Which number?", .answer_prefix = "The number is"};
  const auto with = tokenize_prompt(*tokenizer, ChatTemplate::llama3, p, 0, Truncation::end);
  p.answer_prefix.clear();
  const auto without = tokenize_prompt(*tokenizer, ChatTemplate::llama3, p, 0, Truncation::end);
  const auto prefix = tokenizer->encode_continuation("The number is");
  ASSERT_EQ(with.tokens.size(), without.tokens.size() + prefix.size());
  EXPECT_TRUE(std::equal(without.tokens.begin(), without.tokens.end(), with.tokens.begin()));
  EXPECT_TRUE(std::equal(prefix.begin(), prefix.end(), with.tokens.end() - prefix.size()));
  EXPECT_EQ(with.context_end, without.context_end);
}

// --tokenize whole vs apart where a word spans the boundary: the context ends in "th" and the
// question starts with "e", so apart gives " th" + "e" and whole one " the" that straddles it.
// Oracle for the whole boundary: decode of growing prefixes (the text is ASCII, so decoded
// lengths are byte offsets), a second algorithm to token_offsets.
TEST_F(Prompts, WholeTokenizationFindsTheBoundaryTokenByOffsets) {
  write_tiny_tokenizer(dir_, "llama", tiny_corpus(), 400, 0);
  const auto tokenizer = load_tokenizer(dir_);
  const Prompt p{.id = "s0", .context = "The cache of every layer is dumped as the prefill runs, one at a time, th",
                 .question = "e question comes last."};
  for (auto t : {ChatTemplate::none, ChatTemplate::llama3}) {
    const auto apart = tokenize_prompt(*tokenizer, t, p, 0, Truncation::end, Tokenization::apart);
    const auto whole = tokenize_prompt(*tokenizer, t, p, 0, Truncation::end, Tokenization::whole);
    ASSERT_EQ(apart.rendered, whole.rendered);
    EXPECT_EQ(apart.context_bytes, whole.context_bytes);
    EXPECT_EQ(whole.tokens, tokenizer->encode(whole.rendered, /*add_special=*/t == ChatTemplate::none));
    EXPECT_NE(apart.tokens, whole.tokens) << "the case must be one where they differ";
    // The template's own BOS is text; `none` gets the tokenizer's, which the text lacks.
    const bool skip = t == ChatTemplate::none;
    std::int64_t holder = 0;  // the first token whose decoded prefix reaches past the context part
    while (tokenizer->decode(std::vector<std::int32_t>(whole.tokens.begin(), whole.tokens.begin() + holder + 1), skip).size() <=
           whole.context_bytes)
      ++holder;
    EXPECT_EQ(whole.context_end, holder);
    EXPECT_EQ(tokenizer->token_bytes(whole.tokens[holder]), " the");  // it straddles: " th" | "e"
    // apart: the context tokens decode to exactly the context part.
    EXPECT_EQ(tokenizer->decode(std::vector<std::int32_t>(apart.tokens.begin(), apart.tokens.begin() + apart.context_end), skip),
              apart.rendered.substr(0, apart.context_bytes));
    // Up to the straddling token both modes agree; apart spells its context share " th" with
    // context tokens of its own.
    ASSERT_GT(apart.context_end, whole.context_end);
    EXPECT_TRUE(std::equal(whole.tokens.begin(), whole.tokens.begin() + whole.context_end, apart.tokens.begin()));
    EXPECT_EQ(tokenizer->decode(std::vector<std::int32_t>(apart.tokens.begin() + whole.context_end,
                                                          apart.tokens.begin() + apart.context_end)),
              " th");
  }
  EXPECT_THROW(parse_tokenization("joint"), Error);
}

TEST_F(Prompts, TextFileIsOneContext) {
  const auto p = prompt_from_text(write("essay.txt", "line one\nline two\n"), "Summarize.");
  EXPECT_EQ(p.id, "s0");
  EXPECT_EQ(p.context, "line one\nline two\n");
  EXPECT_EQ(p.question, "Summarize.");
  EXPECT_THROW(prompt_from_text(write("empty.txt", "")), Error);
  EXPECT_THROW(parse_truncation("start"), Error);
}

}  // namespace
}  // namespace kvlab::harness
