#include "datasets/qa_corpus.h"

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/parse_json.h"
#include "core/read_file.h"

namespace kvlab::datasets {

using nlohmann::json;

namespace {

const json& member(const json& j, const char* name, const std::string& where, const std::string& source) {
  if (!j.is_object() || !j.contains(name)) fail("QA file {}: {}: missing '{}'", source, where, name);
  return j.at(name);
}

std::string text_of(const json& j, const std::string& where, const std::string& source) {
  if (!j.is_string()) fail("QA file {}: {}: expected a string", source, where);
  return j.get<std::string>();
}

const json& array_of(const json& j, const std::string& where, const std::string& source) {
  if (!j.is_array()) fail("QA file {}: {}: expected a list", source, where);
  return j;
}

// Sorted unique documents and their index lookup (RULER: sorted(list(set(docs)))).
std::vector<std::string> unique_sorted(std::vector<std::string> docs) {
  std::sort(docs.begin(), docs.end());
  docs.erase(std::unique(docs.begin(), docs.end()), docs.end());
  return docs;
}

std::int64_t index_of(const std::vector<std::string>& sorted_docs, const std::string& doc) {
  return std::lower_bound(sorted_docs.begin(), sorted_docs.end(), doc) - sorted_docs.begin();
}

void parse_squad(const json& root, const std::string& source, std::vector<std::string>& docs,
                 std::vector<QaItem>& items) {
  const json& data = array_of(member(root, "data", "top level", source), "data", source);
  std::vector<std::string> all;
  for (std::size_t a = 0; a < data.size(); ++a) {
    const std::string wa = fmt::format("data[{}]", a);
    const json& paragraphs = array_of(member(data[a], "paragraphs", wa, source), wa + ".paragraphs", source);
    for (std::size_t p = 0; p < paragraphs.size(); ++p) {
      const std::string wp = fmt::format("{}.paragraphs[{}]", wa, p);
      all.push_back(text_of(member(paragraphs[p], "context", wp, source), wp + ".context", source));
    }
  }
  docs = unique_sorted(std::move(all));
  for (std::size_t a = 0; a < data.size(); ++a) {
    const std::string wa = fmt::format("data[{}]", a);
    const json& paragraphs = data[a].at("paragraphs");
    std::vector<std::int64_t> article_docs;
    for (const auto& p : paragraphs) article_docs.push_back(index_of(docs, p.at("context").get<std::string>()));
    for (std::size_t p = 0; p < paragraphs.size(); ++p) {
      const std::string wp = fmt::format("{}.paragraphs[{}]", wa, p);
      const std::int64_t gold = article_docs[p];
      const json& qas = array_of(member(paragraphs[p], "qas", wp, source), wp + ".qas", source);
      for (std::size_t q = 0; q < qas.size(); ++q) {
        const std::string wq = fmt::format("{}.qas[{}]", wp, q);
        if (qas[q].contains("is_impossible")) {
          const json& imp = qas[q].at("is_impossible");
          if (!imp.is_boolean()) fail("QA file {}: {}.is_impossible: expected true or false", source, wq);
          if (imp.get<bool>()) continue;
        }
        QaItem item;
        item.question = text_of(member(qas[q], "question", wq, source), wq + ".question", source);
        const json& answers = array_of(member(qas[q], "answers", wq, source), wq + ".answers", source);
        for (std::size_t k = 0; k < answers.size(); ++k) {
          const std::string wk = fmt::format("{}.answers[{}]", wq, k);
          item.answers.push_back(text_of(member(answers[k], "text", wk, source), wk + ".text", source));
        }
        if (item.answers.empty()) fail("QA file {}: {}: an answerable question without answers", source, wq);
        item.gold = {gold};
        for (const auto d : article_docs) {
          if (d != gold) item.more.push_back(d);
        }
        items.push_back(std::move(item));
      }
    }
  }
}

std::string hotpot_doc(const json& para, const std::string& where, const std::string& source) {
  if (!para.is_array() || para.size() != 2) fail("QA file {}: {}: expected [title, [sentences]]", source, where);
  std::string doc = text_of(para[0], where + "[0]", source) + "\n";
  const json& sentences = array_of(para[1], where + "[1]", source);
  for (std::size_t s = 0; s < sentences.size(); ++s) {
    doc += text_of(sentences[s], fmt::format("{}[1][{}]", where, s), source);
  }
  return doc;
}

void parse_hotpotqa(const json& root, const std::string& source, std::vector<std::string>& docs,
                    std::vector<QaItem>& items) {
  const json& data = array_of(root, "top level", source);
  std::vector<std::vector<std::string>> per_item(data.size());
  std::vector<std::string> all;
  for (std::size_t i = 0; i < data.size(); ++i) {
    const std::string wi = fmt::format("[{}]", i);
    const json& context = array_of(member(data[i], "context", wi, source), wi + ".context", source);
    for (std::size_t c = 0; c < context.size(); ++c) {
      per_item[i].push_back(hotpot_doc(context[c], fmt::format("{}.context[{}]", wi, c), source));
      all.push_back(per_item[i].back());
    }
  }
  docs = unique_sorted(std::move(all));
  for (std::size_t i = 0; i < data.size(); ++i) {
    const std::string wi = fmt::format("[{}]", i);
    QaItem item;
    item.question = text_of(member(data[i], "question", wi, source), wi + ".question", source);
    item.answers = {text_of(member(data[i], "answer", wi, source), wi + ".answer", source)};
    for (const auto& d : per_item[i]) item.gold.push_back(index_of(docs, d));
    if (item.gold.empty()) fail("QA file {}: {}.context: no paragraphs", source, wi);
    items.push_back(std::move(item));
  }
}

}  // namespace

QaCorpus QaCorpus::load(const std::filesystem::path& path, QaFormat format) {
  return parse(core::read_file(path, "QA file"), format, path.string());
}

QaCorpus QaCorpus::parse(std::string_view json_text, QaFormat format, std::string source) {
  const json root = core::parse_json(json_text, "QA file " + source);
  QaCorpus corpus;
  corpus.format_ = format;
  corpus.source_ = source;
  if (format == QaFormat::squad) {
    parse_squad(root, source, corpus.documents_, corpus.items_);
  } else {
    parse_hotpotqa(root, source, corpus.documents_, corpus.items_);
  }
  if (corpus.items_.empty()) fail("QA file {}: no usable questions", source);
  return corpus;
}

}  // namespace kvlab::datasets
