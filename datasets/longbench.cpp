#include "datasets/longbench.h"

#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "datasets/py_str.h"

namespace kvlab::datasets {

using nlohmann::json;

namespace {

std::vector<LongBenchDataset> make_datasets() {
  // Prompts: THUDM/LongBench config/dataset2prompt.json, verbatim.
  constexpr std::string_view kPassagesQa =
      "Answer the question based on the given passages. Only give me the answer and do not output any other "
      "words.\n\nThe following are given passages.\n{context}\n\nAnswer the question based on the given passages. "
      "Only give me the answer and do not output any other words.\n\nQuestion: {input}\nAnswer:";
  return {
      {"narrativeqa", "en",
       "You are given a story, which can be either a novel or a movie script, and a question. Answer the question as "
       "concisely as you can, using a single phrase if possible. Do not provide any explanation.\n\nStory: "
       "{context}\n\nNow, answer the question based on the story as concisely as you can, using a single phrase if "
       "possible. Do not provide any explanation.\n\nQuestion: {input}\n\nAnswer:",
       128, "qa_f1_score", true, false, false},
      {"qasper", "en",
       "You are given a scientific article and a question. Answer the question as concisely as you can, using a "
       "single phrase or sentence if possible. If the question cannot be answered based on the information in the "
       "article, write \"unanswerable\". If the question is a yes/no question, answer \"yes\", \"no\", or "
       "\"unanswerable\". Do not provide any explanation.\n\nArticle: {context}\n\n Answer the question based on the "
       "above article as concisely as you can, using a single phrase or sentence if possible. If the question cannot "
       "be answered based on the information in the article, write \"unanswerable\". If the question is a yes/no "
       "question, answer \"yes\", \"no\", or \"unanswerable\". Do not provide any explanation.\n\nQuestion: "
       "{input}\n\nAnswer:",
       128, "qa_f1_score", true, false, false},
      {"multifieldqa_en", "en",
       "Read the following text and answer briefly.\n\n{context}\n\nNow, answer the following question based on the "
       "above text, only give me the answer and do not output any other words.\n\nQuestion: {input}\nAnswer:",
       64, "qa_f1_score", true, false, false},
      {"multifieldqa_zh", "zh",
       "阅读以下文字并用中文简短回答：\n\n{context}\n\n现在请基于上面的文章回答下面的问题，只告诉我答案，不要输出任何其他字词。\n\n问题：{input}\n回答：",
       64, "qa_f1_zh_score", true, false, false},
      {"hotpotqa", "en", kPassagesQa, 32, "qa_f1_score", true, false, false},
      {"2wikimqa", "en", kPassagesQa, 32, "qa_f1_score", true, false, false},
      {"musique", "en", kPassagesQa, 32, "qa_f1_score", true, false, false},
      {"dureader", "zh", "请基于给定的文章回答下述问题。\n\n文章：{context}\n\n请基于上述文章回答下面的问题。\n\n问题：{input}\n回答：", 128,
       "rouge_zh_score", true, false, false},
      {"gov_report", "en",
       "You are given a report by a government agency. Write a one-page summary of the report.\n\nReport:\n{context}\n\n"
       "Now, write a one-page summary of the report.\n\nSummary:",
       512, "rouge_score", true, false, false},
      {"qmsum", "en",
       "You are given a meeting transcript and a query containing a question or instruction. Answer the query in one "
       "or more sentences.\n\nTranscript:\n{context}\n\nNow, answer the query based on the above meeting transcript "
       "in one or more sentences.\n\nQuery: {input}\nAnswer:",
       512, "rouge_score", true, false, false},
      {"multi_news", "en",
       "You are given several news passages. Write a one-page summary of all news. \n\nNews:\n{context}\n\nNow, write "
       "a one-page summary of all the news.\n\nSummary:",
       512, "rouge_score", true, false, false},
      {"vcsum", "zh", "下面有一段会议记录，请你阅读后，写一段总结，总结会议的内容。\n会议记录：\n{context}\n\n会议总结：", 512,
       "rouge_zh_score", true, false, false},
      {"trec", "en",
       "Please determine the type of the question below. Here are some examples of questions.\n\n{context}\n{input}",
       64, "classification_score", false, true, false},
      {"triviaqa", "en",
       "Answer the question based on the given passage. Only give me the answer and do not output any other words. "
       "The following are some examples.\n\n{context}\n\n{input}",
       32, "qa_f1_score", false, true, false},
      {"samsum", "en",
       "Summarize the dialogue into a few short sentences. The following are some examples.\n\n{context}\n\n{input}",
       128, "rouge_score", false, true, true},
      {"lsht", "zh", "请判断给定新闻的类别，下面是一些例子。\n\n{context}\n{input}", 64, "classification_score", false, true,
       false},
      {"passage_count", "en",
       "There are some paragraphs below sourced from Wikipedia. Some of them may be duplicates. Please carefully read "
       "these paragraphs and determine how many unique paragraphs there are after removing duplicates. In other "
       "words, how many non-repeating paragraphs are there in total?\n\n{context}\n\nPlease enter the final count of "
       "unique paragraphs after removing duplicates. The output format should only contain the number, such as 1, 2, "
       "3, and so on.\n\nThe final answer is: ",
       32, "count_score", true, false, false},
      {"passage_retrieval_en", "en",
       "Here are 30 paragraphs from Wikipedia, along with an abstract. Please determine which paragraph the abstract "
       "is from.\n\n{context}\n\nThe following is an abstract.\n\n{input}\n\nPlease enter the number of the "
       "paragraph that the abstract is from. The answer format must be like \"Paragraph 1\", \"Paragraph 2\", "
       "etc.\n\nThe answer is: ",
       32, "retrieval_score", true, false, false},
      {"passage_retrieval_zh", "zh",
       "以下是若干段落文字，以及其中一个段落的摘要。请确定给定的摘要出自哪一段。\n\n{context}\n\n下面是一个摘要\n\n{input}\n\n请输入摘要所属段落的编号。答案格式必须是\"段落1\"，\"段落2\"等格式\n\n答案是：",
       32, "retrieval_zh_score", true, false, false},
      {"lcc", "en", "Please complete the code given below. \n{context}Next line of code:\n", 64, "code_sim_score", false,
       false, false},
      {"repobench-p", "en", "Please complete the code given below. \n{context}{input}Next line of code:\n", 64,
       "code_sim_score", false, false, false},
  };
}

[[noreturn]] void line_error(std::string_view file, std::int64_t line, const std::string& what) {
  fail("{}:{}: {}", file, line, what);
}

std::string string_field(const json& j, const char* name, bool required, std::string_view file, std::int64_t line) {
  if (!j.contains(name) || j.at(name).is_null()) {
    if (required) line_error(file, line, fmt::format("missing field '{}'", name));
    return {};
  }
  if (!j.at(name).is_string()) line_error(file, line, fmt::format("field '{}' must be a string", name));
  return j.at(name).get<std::string>();
}

std::vector<std::string> string_list(const json& j, const char* name, std::string_view file, std::int64_t line) {
  const json& v = j.at(name);
  if (!v.is_array()) line_error(file, line, fmt::format("field '{}' must be a list of strings", name));
  std::vector<std::string> out;
  for (const auto& e : v) {
    if (!e.is_string()) line_error(file, line, fmt::format("field '{}' must be a list of strings", name));
    out.push_back(e.get<std::string>());
  }
  return out;
}

}  // namespace

const std::vector<LongBenchDataset>& longbench_datasets() {
  static const std::vector<LongBenchDataset> datasets = make_datasets();
  return datasets;
}

const LongBenchDataset& longbench_dataset(std::string_view name) {
  std::string_view bare = name;
  if (bare.starts_with("longbench:")) bare.remove_prefix(10);
  if (bare.ends_with("_e")) bare.remove_suffix(2);
  std::string known;
  for (const auto& d : longbench_datasets()) {
    if (d.name == bare) return d;
    known += known.empty() ? "" : ", ";
    known += d.name;
  }
  fail("unknown LongBench dataset '{}'; known datasets: {}", name, known);
}

LongBenchRecord parse_longbench_line(std::string_view text, std::string_view file, std::int64_t line) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    line_error(file, line, fmt::format("not valid JSON ({})", e.what()));
  }
  if (!j.is_object()) line_error(file, line, "expected a JSON object");
  LongBenchRecord r;
  r.line = line;
  r.input = string_field(j, "input", true, file, line);
  r.context = string_field(j, "context", true, file, line);
  if (!j.contains("answers")) line_error(file, line, "missing field 'answers'");
  r.answers = string_list(j, "answers", file, line);
  if (j.contains("length") && !j.at("length").is_null()) {
    if (!j.at("length").is_number_integer()) line_error(file, line, "field 'length' must be an integer");
    r.length = j.at("length").get<std::int64_t>();
  }
  r.dataset = string_field(j, "dataset", false, file, line);
  r.language = string_field(j, "language", false, file, line);
  if (j.contains("all_classes") && !j.at("all_classes").is_null()) r.all_classes = string_list(j, "all_classes", file, line);
  r.id = string_field(j, "_id", false, file, line);
  return r;
}

std::vector<LongBenchRecord> load_longbench_jsonl(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("LongBench file {}: cannot open it", path.string());
  const std::string file = path.string();
  std::vector<LongBenchRecord> out;
  std::string line;
  std::int64_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (py::strip(line).empty()) continue;
    out.push_back(parse_longbench_line(line, file, number));
  }
  if (in.bad()) fail("LongBench file {}: read error after line {}", file, number);
  return out;
}

TaskSample longbench_sample(const LongBenchRecord& record, std::int64_t index, std::string_view dataset) {
  const std::string_view name = dataset.empty() ? std::string_view(record.dataset) : dataset;
  if (name.empty()) fail("LongBench record at line {}: no dataset field and none given", record.line);
  const LongBenchDataset& d = longbench_dataset(name);
  const std::size_t at = d.prompt.find("{context}");
  TaskSample s;
  s.id = record.id.empty() ? fmt::format("{}-{}", d.name, index) : record.id;
  s.task = fmt::format("longbench:{}", d.name);
  // str.format on the template: only the template's own placeholders are replaced, never text
  // inside the context or input.
  s.context = std::string(d.prompt.substr(0, at)) + record.context;
  s.question = py::replace_all(d.prompt.substr(at + 9), "{input}", record.input);
  s.answers = record.answers;
  s.all_classes = record.all_classes.value_or(std::vector<std::string>{});
  s.metric = std::string(d.metric);
  s.max_new_tokens = d.max_new_tokens;
  s.index = index;
  s.length = record.length;
  s.language = record.language.empty() ? std::string(d.language) : record.language;
  s.haystack_begin = static_cast<std::int64_t>(at);
  s.haystack_end = static_cast<std::int64_t>(s.context.size());
  return s;
}

std::string_view longbench_e_bucket(std::int64_t length) {
  if (length < 4000) return "0-4k";
  if (length < 8000) return "4-8k";
  return "8k+";
}

std::vector<std::int32_t> longbench_middle_truncate(std::span<const std::int32_t> ids, std::int64_t max_length) {
  if (max_length < 0) fail("LongBench truncation: max_length must be ≥ 0 (got {})", max_length);
  const auto n = static_cast<std::int64_t>(ids.size());
  if (n <= max_length) return {ids.begin(), ids.end()};
  const std::int64_t half = max_length / 2;  // int(max_length / 2)
  std::vector<std::int32_t> out(ids.begin(), ids.begin() + half);
  out.insert(out.end(), ids.end() - half, ids.end());
  return out;
}

bool longbench_truncate(TaskSample& sample, std::int64_t max_length, const EncodeText& encode, const DecodeIds& decode) {
  if (!encode || !decode) fail("LongBench truncation of {}: needs the tokenizer's encode and decode", sample.id);
  const std::vector<std::int32_t> ids = encode(sample.context + sample.question);
  const auto n = static_cast<std::int64_t>(ids.size());
  if (n <= max_length) return false;
  const std::int64_t half = max_length / 2;
  const std::span<const std::int32_t> all(ids);
  const std::string head = decode(all.subspan(0, static_cast<std::size_t>(half)));
  const std::string tail = decode(all.subspan(static_cast<std::size_t>(n - half)));
  if (!sample.question.empty() && tail.ends_with(sample.question)) {
    sample.context = head + tail.substr(0, tail.size() - sample.question.size());
  } else {
    sample.context = head;
    sample.question = tail;
  }
  sample.haystack_end = std::min<std::int64_t>(sample.haystack_end, static_cast<std::int64_t>(sample.context.size()));
  sample.haystack_begin = std::min(sample.haystack_begin, sample.haystack_end);
  return true;
}

}  // namespace kvlab::datasets
