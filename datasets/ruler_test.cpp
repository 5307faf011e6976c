// Oracle tests of the RULER-style generators: every needle is in the context exactly once at its
// recorded offset (and at the requested depth), the answers can be found in the context by string
// search, lengths land just under the budget with the given tokenizer, and the same seed gives the
// same bytes. Token counts come from a whitespace counter (and a bytes/4 counter): the generators
// only see the CountTokens callback.
#include "datasets/ruler.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "core/error.h"
#include "datasets/py_str.h"
#include "datasets/ruler_sizing.h"
#include "datasets/task_sample.h"

namespace kvlab::datasets {
namespace {

using ::testing::HasSubstr;

const std::string kTestData = std::string(KVLAB_SOURCE_DIR) + "/datasets/testdata/";

std::int64_t whitespace_tokens(std::string_view text) { return static_cast<std::int64_t>(py::split(text).size()); }
std::int64_t byte_tokens(std::string_view text) { return static_cast<std::int64_t>((text.size() + 3) / 4); }

std::int64_t occurrences(std::string_view text, std::string_view what) {
  std::int64_t n = 0;
  for (std::size_t at = text.find(what); at != std::string_view::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

std::shared_ptr<const WordList> test_words(std::size_t n = 3000) {
  return std::make_shared<const WordList>(WordList::from_words(pseudo_words(n, 7), "pseudo words"));
}

std::shared_ptr<const EssayHaystack> test_essay() {
  return std::make_shared<const EssayHaystack>(EssayHaystack::load(kTestData + "essay_tiny.txt"));
}

RulerResources resources_for(RulerTask task) {
  RulerResources r;
  r.words = test_words();
  r.essay = test_essay();
  if (task == RulerTask::qa_1) r.qa = std::make_shared<const QaCorpus>(QaCorpus::load(kTestData + "squad_tiny.json", QaFormat::squad));
  if (task == RulerTask::qa_2) r.qa = std::make_shared<const QaCorpus>(QaCorpus::load(kTestData + "hotpot_tiny.json", QaFormat::hotpotqa));
  return r;
}

RulerGenerator generator(RulerTask task, std::int64_t length, std::uint64_t seed = 42, CountTokens count = whitespace_tokens) {
  RulerOptions o;
  o.max_seq_length = length;
  o.seed = seed;
  return RulerGenerator(task, o, resources_for(task), std::move(count));
}

// ---- every task: the invariants ----

struct Case {
  RulerTask task;
  std::int64_t length;
};

class RulerEveryTask : public ::testing::TestWithParam<Case> {};

TEST_P(RulerEveryTask, FitsTheBudgetAndHidesItsAnswers) {
  const auto [task, length] = GetParam();
  const RulerGenerator gen = generator(task, length);
  const RulerTaskSpec& spec = gen.spec();
  for (std::int64_t i = 0; i < 2; ++i) {
    const TaskSample s = gen.sample(i);
    SCOPED_TRACE(s.id);
    EXPECT_EQ(s.task, "ruler:" + std::string(spec.name));
    EXPECT_EQ(s.id, fmt::format("{}-{}-{}", spec.name, length, i));
    EXPECT_EQ(s.metric, spec.metric);
    EXPECT_EQ(s.max_new_tokens, spec.tokens_to_generate);
    EXPECT_EQ(s.target_tokens, length);

    // Length: within budget, and short of it by less than one haystack unit (≤ 64 whitespace
    // tokens covers a qa document, a noise line, a cwe word's repeats and an fwe word's).
    EXPECT_EQ(s.tokens, whitespace_tokens(s.prompt_text()));
    EXPECT_LE(s.tokens + s.max_new_tokens, length);
    EXPECT_GE(s.tokens + s.max_new_tokens, length - 64);

    // The split: question and answer prefix are the template's, the haystack sits in the context.
    EXPECT_FALSE(s.question.empty());
    EXPECT_FALSE(s.answer_prefix.empty());
    EXPECT_EQ(s.answer_prefix.front(), ' ');
    EXPECT_LT(s.haystack_begin, s.haystack_end);
    EXPECT_LE(s.haystack_end, static_cast<std::int64_t>(s.context.size()));

    // Needles: at their offsets, inside the haystack, depth = their relative position.
    for (const auto& n : s.needles) {
      ASSERT_GE(n.offset, s.haystack_begin);
      ASSERT_LE(n.offset + static_cast<std::int64_t>(n.text.size()), s.haystack_end);
      EXPECT_EQ(s.context.substr(static_cast<std::size_t>(n.offset), n.text.size()), n.text);
      EXPECT_NEAR(n.depth, static_cast<double>(n.offset - s.haystack_begin) / static_cast<double>(s.haystack_end - s.haystack_begin), 1e-12);
      if (spec.family != RulerFamily::qa) {  // qa documents may repeat
        EXPECT_EQ(occurrences(s.context, n.text), 1) << n.text;
      }
    }

    // Answers: recoverable from the context by string search (HotpotQA's "yes" is not, by design).
    ASSERT_FALSE(s.answers.empty());
    if (spec.family == RulerFamily::qa) {
      EXPECT_FALSE(s.needles.empty());  // the gold documents
      if (!(task == RulerTask::qa_2 && i == 1)) {
        EXPECT_TRUE(std::any_of(s.answers.begin(), s.answers.end(), [&](const std::string& a) { return py::contains(s.context, a); }));
      }
    } else {
      for (const auto& a : s.answers) EXPECT_TRUE(py::contains(s.context.substr(static_cast<std::size_t>(s.haystack_begin)), a)) << a;
    }
    if (spec.family == RulerFamily::niah) {
      EXPECT_EQ(static_cast<int>(s.needles.size()), std::max(spec.num_keys, spec.num_queries) * spec.num_values);
      for (const auto& a : s.answers) {
        EXPECT_EQ(std::count_if(s.needles.begin(), s.needles.end(), [&](const NeedlePlacement& n) { return n.text.ends_with(" is: " + a + "."); }), 1);
      }
    }
  }
}

TEST_P(RulerEveryTask, SameSeedSameBytesOtherSeedOtherBytes) {
  const auto [task, length] = GetParam();
  const std::string a = to_json(generator(task, length, 42).sample(1));
  const std::string b = to_json(generator(task, length, 42).sample(1));
  EXPECT_EQ(a, b);
  const TaskSample c = generator(task, length, 43).sample(1);
  EXPECT_NE(to_json(c), a);
  EXPECT_NE(c.context, task_sample_from_json(a).context);
}

std::vector<Case> every_task() {
  std::vector<Case> out;
  for (const auto& s : ruler_task_specs()) {
    out.push_back({s.task, 2048});
    out.push_back({s.task, 4096});
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(All, RulerEveryTask, ::testing::ValuesIn(every_task()), [](const auto& param_info) {
  return std::string(ruler_task_spec(param_info.param.task).name) + "_" + std::to_string(param_info.param.length);
});

// ---- task by task ----

TEST(Ruler, TaskNamesParseWithOrWithoutSuite) {
  EXPECT_EQ(parse_ruler_task("ruler:niah_single_1"), RulerTask::niah_single_1);
  EXPECT_EQ(parse_ruler_task("qa_2"), RulerTask::qa_2);
  EXPECT_EQ(ruler_task_specs().size(), 13u);
  try {
    parse_ruler_task("ruler:niah_single_9");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("niah_single_9"));
    EXPECT_THAT(e.what(), HasSubstr("known tasks: niah_single_1, niah_single_2"));
    EXPECT_THAT(e.what(), HasSubstr("qa_2"));
  }
}

TEST(Ruler, SingleNeedleUsesTheSingularRewrite) {
  const TaskSample s = generator(RulerTask::niah_single_1, 4096).sample(0);
  ASSERT_EQ(s.needles.size(), 1u);
  ASSERT_EQ(s.answers.size(), 1u);
  const std::string& value = s.answers[0];
  EXPECT_EQ(value.size(), 7u);
  EXPECT_TRUE(std::all_of(value.begin(), value.end(), ::isdigit));
  // The needle keeps the plural type name; key = "{word}-{word}".
  const std::string& needle = s.needles[0].text;
  ASSERT_TRUE(needle.starts_with("One of the special magic numbers for "));
  const std::string key = needle.substr(37, needle.find(" is: ") - 37);
  EXPECT_EQ(std::count(key.begin(), key.end(), '-'), 1);
  EXPECT_EQ(needle, "One of the special magic numbers for " + key + " is: " + value + ".");
  EXPECT_TRUE(s.context.starts_with(
      "A special magic number is hidden within the following text. Make sure to memorize it. I will quiz you about the "
      "number afterwards.\nThe grass is green. The sky is blue."));
  EXPECT_TRUE(s.context.ends_with("There and back again.\n") || s.context.ends_with(needle + "\n"));
  EXPECT_EQ(s.question, "What is the special magic number for " + key + " mentioned in the provided text?");
  EXPECT_EQ(s.answer_prefix, " The special magic number for " + key + " mentioned in the provided text is");
}

TEST(Ruler, MultiQueryAsksForFourKeysInOneQuestion) {
  const TaskSample s = generator(RulerTask::niah_multiquery, 4096).sample(0);
  ASSERT_EQ(s.answers.size(), 4u);
  ASSERT_EQ(s.needles.size(), 4u);
  EXPECT_TRUE(s.question.starts_with("What are all the special magic numbers for "));
  EXPECT_EQ(std::count(s.question.begin(), s.question.end(), ','), 3);
  EXPECT_THAT(s.question, HasSubstr(", and "));
  EXPECT_TRUE(s.answer_prefix.ends_with(" mentioned in the provided text are"));
  // Answers come in query order: the i-th queried key's needle holds the i-th answer.
  const std::string keys = s.question.substr(43, s.question.find(" mentioned") - 43);
  std::size_t last = 0;
  for (const auto& a : s.answers) {
    const auto needle = std::find_if(s.needles.begin(), s.needles.end(), [&](const NeedlePlacement& n) { return n.text.ends_with(" is: " + a + "."); });
    ASSERT_NE(needle, s.needles.end());
    const std::string key = needle->text.substr(37, needle->text.find(" is: ") - 37);
    const std::size_t at = keys.find(key);
    ASSERT_NE(at, std::string::npos);
    EXPECT_GE(at, last);
    last = at;
  }
}

TEST(Ruler, MultiValueHidesFourValuesForOneKey) {
  const TaskSample s = generator(RulerTask::niah_multivalue, 4096).sample(0);
  ASSERT_EQ(s.answers.size(), 4u);
  const std::string key = s.needles[0].text.substr(37, s.needles[0].text.find(" is: ") - 37);
  for (const auto& n : s.needles) EXPECT_TRUE(n.text.starts_with("One of the special magic numbers for " + key + " is: "));
}

TEST(Ruler, UuidNeedlesInADistractorHaystack) {
  const TaskSample s = generator(RulerTask::niah_multikey_3, 4096).sample(0);
  ASSERT_EQ(s.answers.size(), 1u);
  const std::string& u = s.answers[0];  // version-4 UUID: xxxxxxxx-xxxx-4xxx-[89ab]xxx-xxxxxxxxxxxx
  ASSERT_EQ(u.size(), 36u);
  EXPECT_EQ(u[8], '-');
  EXPECT_EQ(u[14], '4');
  EXPECT_THAT(std::string("89ab"), HasSubstr(std::string(1, u[19])));
  EXPECT_THAT(s.question, HasSubstr("What is the special magic uuid for "));
  // The haystack is made of distractor needles, one per line.
  EXPECT_GT(s.haystack_units, 50);
  EXPECT_EQ(occurrences(s.context, "One of the special magic uuids for "), s.haystack_units + 1);
}

TEST(Ruler, NeedleLandsAtTheRequestedDepth) {
  for (const RulerTask task : {RulerTask::niah_single_1, RulerTask::niah_single_2, RulerTask::niah_multikey_2}) {
    for (const double depth : {0.0, 10.0, 25.0, 50.0, 77.0, 100.0}) {
      RulerOptions o;
      o.max_seq_length = 4096;
      o.depth_percent = depth;
      const TaskSample s = RulerGenerator(task, o, resources_for(task), whitespace_tokens).sample(3);
      SCOPED_TRACE(fmt::format("{} at {}%", s.task, depth));
      ASSERT_EQ(s.needles.size(), 1u);
      EXPECT_EQ(s.depth_percent, depth);
      // Measured independently: the needle's first byte as a fraction of the haystack's bytes.
      const std::size_t at = s.context.find(s.needles[0].text);
      ASSERT_NE(at, std::string::npos);
      const double measured = static_cast<double>(static_cast<std::int64_t>(at) - s.haystack_begin) /
                              static_cast<double>(s.haystack_end - s.haystack_begin);
      EXPECT_NEAR(measured, depth / 100.0, 0.02);
    }
  }
}

TEST(Ruler, RandomDepthsFollowRulersGrid) {
  // Without a requested depth an essay needle goes after sentence int(n_sents · d / 100) for d in
  // RULER's 40 depths: over many samples the measured depths spread over [0, 1].
  const RulerGenerator gen = generator(RulerTask::niah_single_2, 2048);
  double lo = 1;
  double hi = 0;
  for (std::int64_t i = 0; i < 12; ++i) {
    const double d = gen.sample(i).needles.at(0).depth;
    lo = std::min(lo, d);
    hi = std::max(hi, d);
  }
  EXPECT_LT(lo, 0.3);
  EXPECT_GT(hi, 0.7);
}

TEST(Ruler, VariableTrackingChainAndOneShotExample) {
  const TaskSample s = generator(RulerTask::vt, 4096).sample(0);
  ASSERT_EQ(s.answers.size(), 5u);
  for (const auto& v : s.answers) {
    EXPECT_EQ(v.size(), 5u);
    EXPECT_TRUE(std::all_of(v.begin(), v.end(), ::isupper));
  }
  ASSERT_EQ(s.needles.size(), 5u);
  const std::string& first = s.needles[0].text;  // "VAR X0 = 12345"
  ASSERT_TRUE(first.starts_with("VAR " + s.answers[0] + " = "));
  const std::string value = first.substr(first.size() - 5);
  for (int h = 1; h < 5; ++h) {
    EXPECT_EQ(s.needles[static_cast<std::size_t>(h)].text, "VAR " + s.answers[static_cast<std::size_t>(h)] + " = VAR " + s.answers[static_cast<std::size_t>(h - 1)] + " ");
  }
  EXPECT_EQ(s.question, "Question: Find all variables that are assigned the value " + value + " in the text above.");
  EXPECT_EQ(s.answer_prefix, " Answer: According to the chain(s) of variable assignment in the text above, 5 variables are assigned the value " + value + ", they are: ");
  // The one-shot example comes first: the same template, answered with five 3-letter names.
  EXPECT_TRUE(s.context.starts_with("Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n"));
  const std::size_t answered = s.context.find("they are:  ");
  ASSERT_NE(answered, std::string::npos);
  const std::size_t end = s.context.find('\n', answered);
  const auto icl_names = py::split(s.context.substr(answered + 11, end - answered - 11));
  ASSERT_EQ(icl_names.size(), 5u);
  for (const auto& n : icl_names) EXPECT_EQ(n.size(), 3u);
  EXPECT_EQ(s.context.substr(end, 2), "\n\n");
  EXPECT_LT(static_cast<std::int64_t>(answered), s.haystack_begin);
}

TEST(Ruler, CommonWordsRepeatAsRulerSays) {
  for (const std::int64_t length : {2048, 4096}) {
    const TaskSample s = generator(RulerTask::cwe, length).sample(0);
    SCOPED_TRACE(s.id);
    ASSERT_EQ(s.answers.size(), 10u);
    // Count the words of the numbered list "1. w 2. w ...".
    std::map<std::string, int> counts;
    const auto tokens = py::split(s.context.substr(static_cast<std::size_t>(s.haystack_begin), static_cast<std::size_t>(s.haystack_end - s.haystack_begin)));
    for (std::size_t i = 1; i < tokens.size(); i += 2) ++counts[tokens[i]];
    const int common = length < 4096 ? 6 : 30;
    const int uncommon = length < 4096 ? 1 : 3;
    for (const auto& a : s.answers) EXPECT_EQ(counts[a], common) << a;
    EXPECT_EQ(static_cast<std::int64_t>(counts.size()), s.haystack_units);
    for (const auto& [w, c] : counts) {
      if (std::find(s.answers.begin(), s.answers.end(), w) == s.answers.end()) {
        EXPECT_EQ(c, uncommon) << w;
      }
    }
    EXPECT_TRUE(tokens[0] == "1." && tokens[2] == "2.");
    EXPECT_EQ(s.question, "Question: What are the 10 most common words in the above list?");
    EXPECT_THAT(s.context.substr(0, static_cast<std::size_t>(s.haystack_begin)), HasSubstr(" Answer: The top 10 words that appear most often in the list are: 1. "));
  }
}

TEST(Ruler, FrequentWordsAnswerRanksTwoToFour) {
  const TaskSample s = generator(RulerTask::fwe, 4096).sample(0);
  std::map<std::string, int> counts;
  for (const auto& w : py::split(s.context.substr(static_cast<std::size_t>(s.haystack_begin), static_cast<std::size_t>(s.haystack_end - s.haystack_begin)))) ++counts[w];
  std::vector<std::pair<int, std::string>> ranked;
  for (const auto& [w, c] : counts) ranked.emplace_back(c, w);
  std::sort(ranked.rbegin(), ranked.rend());
  ASSERT_GE(ranked.size(), 5u);
  EXPECT_EQ(ranked[0].second, "...");
  EXPECT_EQ(s.answers, (std::vector<std::string>{ranked[1].second, ranked[2].second, ranked[3].second}));
  EXPECT_GT(ranked[3].first, ranked[4].first);
  // Zipf counts: int(n · k^-2 / ζ(2)) for the haystack's n.
  const double n = static_cast<double>(s.haystack_units);
  EXPECT_EQ(ranked[1].first, static_cast<int>(n / 4.0 / (M_PI * M_PI / 6.0)));
  for (const auto& a : s.answers) EXPECT_EQ(a.size(), 6u);
}

TEST(Ruler, SquadQuestionsInOrderWithTheirParagraph) {
  const RulerGenerator gen = generator(RulerTask::qa_1, 2048);
  const TaskSample s = gen.sample(0);
  EXPECT_EQ(s.question, std::string("Answer the question based on the given documents. Only give me the answer and do not output any other words.\n\nQuestion: When was the lighthouse on Gull Point built?"));
  EXPECT_EQ(s.answer_prefix, " Answer:");
  EXPECT_EQ(s.answers, (std::vector<std::string>{"1871", "in 1871"}));
  EXPECT_TRUE(s.context.starts_with("Answer the question based on the given documents. Only give me the answer and do not output any other words.\n\nThe following are given documents.\n\nDocument 1:\n"));
  EXPECT_TRUE(s.context.ends_with("\n\n"));
  // The impossible question is skipped: sample 1 is the third question of the file.
  EXPECT_EQ(gen.sample(1).answers, (std::vector<std::string>{"once a month"}));
  try {
    gen.sample(3);  // the file has 3 answerable questions
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("squad_tiny.json has 3 usable questions"));
  }
}

TEST(Ruler, HotpotDocumentsJoinTitleAndSentences) {
  const QaCorpus c = QaCorpus::load(kTestData + "hotpot_tiny.json", QaFormat::hotpotqa);
  ASSERT_EQ(c.items().size(), 2u);
  EXPECT_EQ(c.documents().size(), 5u);  // "Marlow Ferry" is shared by both questions
  const auto& d = c.documents()[static_cast<std::size_t>(c.items()[0].gold[1])];
  EXPECT_EQ(d, "Marlow Ferry\nMarlow Ferry is a market town. It lies on the banks of the Wren, a slow chalk river.");
  EXPECT_EQ(c.items()[1].answers, (std::vector<std::string>{"yes"}));
}

TEST(Ruler, QaFileErrorsNameTheFileAndPlace) {
  try {
    QaCorpus::parse(R"({"data": [{"paragraphs": [{"context": "x", "qas": [{"answers": []}]}]}]})", QaFormat::squad, "my.json");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("my.json"));
    EXPECT_THAT(e.what(), HasSubstr("data[0].paragraphs[0].qas[0]: missing 'question'"));
  }
  EXPECT_THROW(QaCorpus::load(kTestData + "nope.json", QaFormat::squad), Error);
}

TEST(Ruler, MissingResourcesAreNamed) {
  RulerOptions o;
  auto error_of = [&](RulerTask t, RulerResources r) {
    try {
      RulerGenerator(t, o, std::move(r), whitespace_tokens);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_THAT(error_of(RulerTask::cwe, {}), HasSubstr("/usr/share/dict/american-english"));
  EXPECT_THAT(error_of(RulerTask::niah_single_1, {}), HasSubstr("wamerican"));
  EXPECT_THAT(error_of(RulerTask::niah_single_2, {test_words(), nullptr, nullptr}), HasSubstr("essay"));
  EXPECT_THAT(error_of(RulerTask::qa_1, {}), HasSubstr("SQuAD"));
  const auto hotpot = std::make_shared<const QaCorpus>(QaCorpus::load(kTestData + "hotpot_tiny.json", QaFormat::hotpotqa));
  EXPECT_THAT(error_of(RulerTask::qa_1, {nullptr, nullptr, hotpot}), HasSubstr("other format"));
  try {
    WordList::load(kTestData + "no_such_words.txt");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("no_such_words.txt"));
  }
}

TEST(Ruler, LoadsOnlyTheResourcesATaskNeeds) {
  const auto words_file = std::filesystem::temp_directory_path() / fmt::format("kvlab_words_{}.txt", ::getpid());
  {
    std::ofstream out(words_file);
    for (const auto& w : pseudo_words(300, 3)) out << w << "\n";
  }
  RulerResourcePaths paths;
  paths.words = words_file;
  RulerOptions o;
  const RulerResources vt = load_ruler_resources(RulerTask::vt, o, paths);
  EXPECT_FALSE(vt.words || vt.essay || vt.qa);
  const RulerResources n1 = load_ruler_resources(RulerTask::niah_single_1, o, paths);
  ASSERT_TRUE(n1.words);
  EXPECT_EQ(n1.words->size(), 300u);
  EXPECT_FALSE(n1.essay);
  try {
    load_ruler_resources(RulerTask::niah_single_2, o, paths);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("essay haystack"));
  }
  paths.essay = kTestData + "essay_tiny.txt";
  EXPECT_TRUE(load_ruler_resources(RulerTask::niah_single_2, o, paths).essay);
  paths.qa = kTestData + "hotpot_tiny.json";
  EXPECT_EQ(load_ruler_resources(RulerTask::qa_2, o, paths).qa->items().size(), 2u);
  EXPECT_THROW(load_ruler_resources(RulerTask::qa_1, o, paths), Error);  // a HotpotQA list is no SQuAD file
  std::filesystem::remove(words_file);
}

TEST(Ruler, NoiseHaystackReplacesTheEssay) {
  RulerOptions o;
  o.max_seq_length = 2048;
  o.haystack = HaystackKind::noise;
  const RulerGenerator gen(RulerTask::niah_single_2, o, {test_words(), nullptr, nullptr}, whitespace_tokens);
  EXPECT_EQ(gen.haystack(), HaystackKind::noise);
  EXPECT_THAT(gen.sample(0).context, HasSubstr(std::string(kNoiseUnit)));
  o.haystack = HaystackKind::essay;
  EXPECT_THROW(RulerGenerator(RulerTask::cwe, o, {test_words(), nullptr, nullptr}, whitespace_tokens), Error);
  o.haystack.reset();
  o.depth_percent = 50;
  EXPECT_THROW(RulerGenerator(RulerTask::vt, o, {}, whitespace_tokens), Error);  // depth is for niah only
}

TEST(Ruler, AnotherTokenizerAnotherSize) {
  // Sized with a bytes/4 "tokenizer": the same contract holds in its units.
  for (const RulerTask task : {RulerTask::niah_single_1, RulerTask::vt, RulerTask::cwe}) {
    const TaskSample s = generator(task, 3000, 42, byte_tokens).sample(0);
    EXPECT_EQ(s.tokens, byte_tokens(s.prompt_text()));
    EXPECT_LE(s.tokens + s.max_new_tokens, 3000);
    EXPECT_GE(s.tokens + s.max_new_tokens, 3000 - 64);
  }
}

TEST(Ruler, ReservedTokensAndGenerationBudget) {
  RulerOptions o;
  o.max_seq_length = 2048;
  o.reserved_tokens = 100;
  o.tokens_to_generate = 16;
  const TaskSample s = RulerGenerator(RulerTask::niah_single_1, o, {test_words(), nullptr, nullptr}, whitespace_tokens).sample(0);
  EXPECT_EQ(s.max_new_tokens, 16);
  EXPECT_EQ(s.reserved_tokens, 100);
  EXPECT_LE(s.tokens + 16 + 100, 2048);
  EXPECT_GE(s.tokens + 16 + 100, 2048 - 32);
}

TEST(Ruler, TooShortOrTooFewWordsIsAnError) {
  RulerOptions o;
  o.max_seq_length = 150;  // 128 to generate leaves 22 tokens: not even the template fits
  try {
    RulerGenerator(RulerTask::niah_single_1, o, {test_words(), nullptr, nullptr}, whitespace_tokens).sample(0);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("does not fit max_seq_length 150"));
  }
  o.max_seq_length = 8192;
  try {
    RulerGenerator(RulerTask::cwe, o, {test_words(200), nullptr, nullptr}, whitespace_tokens).sample(0);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("word list is too small"));
  }
}

TEST(Ruler, SampleRoundTripsThroughJson) {
  const TaskSample s = generator(RulerTask::niah_multikey_1, 2048).sample(2);
  const TaskSample back = task_sample_from_json(to_json(s));
  EXPECT_EQ(to_json(back), to_json(s));
  EXPECT_EQ(back.needles.size(), 4u);
  EXPECT_THROW(task_sample_from_json(R"({"id": "x"})"), Error);
}

TEST(RulerSizing, FindsTheLargestFittingSizeInFewSteps) {
  // t(n) = 10 + 3n, budget 100: n = 30 fits exactly, 31 does not.
  detail::SizeSearch s;
  s.budget = 100;
  s.start = 5;
  s.min_units = 1;
  s.max_units = 1000;
  s.tokens_per_unit = 1;  // a bad guess: the secant corrects it
  const auto fit = detail::fit_size([](std::int64_t n) { return 10 + 3 * n; }, s);
  EXPECT_TRUE(fit.fits);
  EXPECT_EQ(fit.units, 30);
  EXPECT_EQ(fit.tokens, 100);
  EXPECT_LE(fit.measurements, 6);
  // Nothing fits.
  s.budget = 5;
  const auto none = detail::fit_size([](std::int64_t n) { return 10 + 3 * n; }, s);
  EXPECT_FALSE(none.fits);
  EXPECT_EQ(none.units, 1);
  // Non-linear, noisy counts still give a bracketed answer.
  s.budget = 5000;
  const auto noisy = detail::fit_size([](std::int64_t n) { return n * 7 + (n % 5) * 3 + n * n / 100; }, s);
  const auto t = [](std::int64_t n) { return n * 7 + (n % 5) * 3 + n * n / 100; };
  EXPECT_LE(t(noisy.units), 5000);
  EXPECT_GT(t(noisy.units + 1), 5000);
}

TEST(Haystack, EssaySentencesAndWordCycling) {
  const EssayHaystack e = EssayHaystack::from_text("Dr. Hale said hi. Then he left! Did he? \"Yes.\" J. R. wrote it", "t");
  EXPECT_EQ(e.word_count(), 14u);
  EXPECT_EQ(e.sentences(14), (std::vector<std::string>{"Dr. Hale said hi.", "Then he left!", "Did he?", "\"Yes.\"", "J. R. wrote it"}));
  // Cycling: 18 words = the 14 words, then the first 4 again (joined to the unfinished sentence).
  EXPECT_EQ(e.sentences(18).back(), "J. R. wrote it Dr. Hale said hi.");
  EXPECT_EQ(e.sentences(18).size(), 5u);
  EXPECT_EQ(e.sentences(2), (std::vector<std::string>{"Dr. Hale"}));
}

TEST(WordLists, FilterSortAndPseudoWords) {
  const WordList w = WordList::from_words({"apple", "Apple", "it's", "zebra", "ox", "apple", "café", "mango"}, "t");
  EXPECT_EQ(w.words(), (std::vector<std::string>{"apple", "mango", "zebra"}));
  const auto p = pseudo_words(500, 1);
  EXPECT_EQ(p.size(), 500u);
  EXPECT_EQ(p, pseudo_words(500, 1));
  EXPECT_NE(p, pseudo_words(500, 2));
  EXPECT_EQ(WordList::from_words(p, "p").size(), 500u);
}

}  // namespace
}  // namespace kvlab::datasets
