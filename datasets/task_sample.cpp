#include "datasets/task_sample.h"

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace kvlab::datasets {

using nlohmann::json;

std::string to_json(const TaskSample& s) {
  json needles = json::array();
  for (const auto& n : s.needles) needles.push_back({{"text", n.text}, {"offset", n.offset}, {"depth", n.depth}});
  const json j = {
      {"id", s.id},
      {"task", s.task},
      {"context", s.context},
      {"question", s.question},
      {"answer_prefix", s.answer_prefix},
      {"answers", s.answers},
      {"all_classes", s.all_classes},
      {"metric", s.metric},
      {"max_new_tokens", s.max_new_tokens},
      {"index", s.index},
      {"seed", s.seed},
      {"target_tokens", s.target_tokens},
      {"reserved_tokens", s.reserved_tokens},
      {"tokens", s.tokens},
      {"depth_percent", s.depth_percent},
      {"haystack_units", s.haystack_units},
      {"haystack_begin", s.haystack_begin},
      {"haystack_end", s.haystack_end},
      {"needles", needles},
      {"length", s.length},
      {"language", s.language},
  };
  // Replace invalid UTF-8 rather than throw: contexts cut from user files may split a character.
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

namespace {

template <typename T>
T field(const json& j, const char* name) {
  if (!j.contains(name)) fail("task sample JSON: missing field '{}'", name);
  try {
    return j.at(name).get<T>();
  } catch (const json::exception& e) {
    fail("task sample JSON: field '{}' has the wrong type ({})", name, e.what());
  }
}

}  // namespace

TaskSample task_sample_from_json(std::string_view text) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    fail("task sample JSON: {}", e.what());
  }
  if (!j.is_object()) fail("task sample JSON: expected an object");
  TaskSample s;
  s.id = field<std::string>(j, "id");
  s.task = field<std::string>(j, "task");
  s.context = field<std::string>(j, "context");
  s.question = field<std::string>(j, "question");
  s.answer_prefix = field<std::string>(j, "answer_prefix");
  s.answers = field<std::vector<std::string>>(j, "answers");
  s.all_classes = field<std::vector<std::string>>(j, "all_classes");
  s.metric = field<std::string>(j, "metric");
  s.max_new_tokens = field<std::int64_t>(j, "max_new_tokens");
  s.index = field<std::int64_t>(j, "index");
  s.seed = field<std::uint64_t>(j, "seed");
  s.target_tokens = field<std::int64_t>(j, "target_tokens");
  s.reserved_tokens = field<std::int64_t>(j, "reserved_tokens");
  s.tokens = field<std::int64_t>(j, "tokens");
  s.depth_percent = field<double>(j, "depth_percent");
  s.haystack_units = field<std::int64_t>(j, "haystack_units");
  s.haystack_begin = field<std::int64_t>(j, "haystack_begin");
  s.haystack_end = field<std::int64_t>(j, "haystack_end");
  for (const auto& n : field<json>(j, "needles")) {
    s.needles.push_back({field<std::string>(n, "text"), field<std::int64_t>(n, "offset"), field<double>(n, "depth")});
  }
  s.length = field<std::int64_t>(j, "length");
  s.language = field<std::string>(j, "language");
  return s;
}

}  // namespace kvlab::datasets
