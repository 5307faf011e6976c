// Question-answering corpora for RULER's qa_1 (SQuAD) and qa_2 (HotpotQA), read from the user's
// copies of the standard files (CC BY-SA; not shipped): SQuAD v2.0 dev (`dev-v2.0.json`; v1.1 files
// work too) and HotpotQA dev distractor (`hotpot_dev_distractor_v1.json`).
//
// As RULER's qa.py:
//   SQuAD:    documents = the unique paragraph contexts, sorted; one item per answerable question
//             (is_impossible false or absent), answers = every answer text, gold = its paragraph,
//             more = the other paragraphs of the same article (preferred distractors).
//   HotpotQA: documents = "{title}\n{''.join(sentences)}" for every context paragraph, unique and
//             sorted; one item per question, answers = [answer], gold = all of that question's
//             context paragraphs, no "more".
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace kvlab::datasets {

enum class QaFormat { squad, hotpotqa };

struct QaItem {
  std::string question;
  std::vector<std::string> answers;
  std::vector<std::int64_t> gold;  // indices into QaCorpus::documents()
  std::vector<std::int64_t> more;  // same-article paragraphs (SQuAD), excluding the gold one
};

class QaCorpus {
 public:
  // kvlab::Error naming the file and the JSON location of a malformed entry.
  static QaCorpus load(const std::filesystem::path& path, QaFormat format);
  static QaCorpus parse(std::string_view json_text, QaFormat format, std::string source);

  QaFormat format() const { return format_; }
  const std::vector<std::string>& documents() const { return documents_; }
  const std::vector<QaItem>& items() const { return items_; }
  const std::string& source() const { return source_; }

 private:
  QaFormat format_ = QaFormat::squad;
  std::vector<std::string> documents_;
  std::vector<QaItem> items_;
  std::string source_;
};

}  // namespace kvlab::datasets
