#include "harness/tokenizer/tiny_tokenizer.h"

#include <nlohmann/json.hpp>
#include <unordered_map>

#include "core/atomic_file.h"
#include "core/error.h"
#include "harness/tokenizer/bpe_trainer.h"
#include "harness/tokenizer/pre_tokenizer.h"
#include "harness/tokenizer/sentencepiece_library.h"

namespace kvlab::harness {
namespace {

using ojson = nlohmann::ordered_json;

struct Family {
  std::string_view regex;
  bool nfc;
  bool pair_merges;     // ["a","b"] (llama) vs legacy "a b" (qwen2)
  bool ignore_merges;
  std::vector<std::string> specials;
  std::optional<std::size_t> bos;  // index into specials
  std::vector<std::size_t> eos;    // indices into specials
  std::string chat_template;       // Jinja text carrying the family's markers
  std::string template_name;
};

Family llama_family() {
  return {kLlama3Regex, false, true, true,
          {"<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"},
          0, {1, 4},
          "{{- bos_token }}{%- for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
          "{{ message['content'] | trim }}<|eot_id|>{%- endfor %}{%- if add_generation_prompt %}"
          "<|start_header_id|>assistant<|end_header_id|>\n\n{%- endif %}",
          "llama3"};
}

Family qwen2_family() {
  return {kQwen2Regex, true, false, false,
          {"<|endoftext|>", "<|im_start|>", "<|im_end|>"},
          std::nullopt, {2, 0},
          "{%- for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
          "'<|im_end|>' + '\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}",
          "qwen2"};
}

std::string mistral_chat_template() {
  return "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}[INST] {{ message['content'] }}"
         "[/INST]{% else %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}";
}

ojson added_token_json(int id, const std::string& content) {
  return {{"id", id}, {"content", content}, {"single_word", false}, {"lstrip", false},
          {"rstrip", false}, {"normalized", false}, {"special", true}};
}

TinyTokenizerInfo write_byte_level(const std::filesystem::path& dir, const Family& f, std::string_view corpus,
                                   int vocab_size) {
  const int n_specials = static_cast<int>(f.specials.size());
  if (vocab_size < 256 + n_specials) {
    fail("tiny tokenizer: vocab_size {} is below 256 byte symbols + {} special tokens", vocab_size, n_specials);
  }
  const BpeTrainResult trained = train_byte_level_bpe(corpus, f.regex, f.nfc, vocab_size - n_specials);
  const int first_special = static_cast<int>(trained.vocab.size());

  ojson vocab = ojson::object();
  for (std::size_t id = 0; id < trained.vocab.size(); ++id) vocab[trained.vocab[id]] = id;
  ojson merges = ojson::array();
  for (const auto& [a, b] : trained.merges) merges.push_back(f.pair_merges ? ojson::array({a, b}) : ojson(a + " " + b));
  ojson added = ojson::array();
  for (int i = 0; i < n_specials; ++i) added.push_back(added_token_json(first_special + i, f.specials[i]));

  const ojson byte_level_post = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}, {"use_regex", true}};
  ojson post = byte_level_post;
  if (f.bos) {
    const std::string& bos = f.specials[*f.bos];
    const int bos_id = first_special + static_cast<int>(*f.bos);
    const ojson special = {{"SpecialToken", {{"id", bos}, {"type_id", 0}}}};
    const ojson seq_a = {{"Sequence", {{"id", "A"}, {"type_id", 0}}}};
    const ojson seq_b = {{"Sequence", {{"id", "B"}, {"type_id", 1}}}};
    ojson bos_entry = ojson::object();
    bos_entry["id"] = bos;
    bos_entry["ids"] = ojson::array({bos_id});
    bos_entry["tokens"] = ojson::array({bos});
    ojson specials = ojson::object();
    specials[bos] = bos_entry;
    ojson templ = ojson::object();
    templ["type"] = "TemplateProcessing";
    templ["single"] = ojson::array({special, seq_a});
    templ["pair"] = ojson::array({special, seq_a, special, seq_b});
    templ["special_tokens"] = specials;
    post = ojson::object();
    post["type"] = "Sequence";
    post["processors"] = ojson::array({byte_level_post, templ});
  }
  const ojson tokenizer = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", added},
      {"normalizer", f.nfc ? ojson{{"type", "NFC"}} : ojson(nullptr)},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"}, {"pattern", {{"Regex", std::string(f.regex)}}}, {"behavior", "Isolated"}, {"invert", false}},
          {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}}}}}},
      {"post_processor", post},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
      {"model",
       {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr}, {"fuse_unk", false}, {"byte_fallback", false},
        {"ignore_merges", f.ignore_merges}, {"vocab", vocab}, {"merges", merges}}}};

  TinyTokenizerInfo info;
  info.vocab_size = first_special + n_specials;
  if (f.bos) info.bos_id = first_special + static_cast<int>(*f.bos);
  for (const std::size_t e : f.eos) info.eos_ids.push_back(first_special + static_cast<int>(e));
  info.chat_template_name = f.template_name;

  ojson decoder = ojson::object();
  for (int i = 0; i < n_specials; ++i) {
    ojson t = added_token_json(first_special + i, f.specials[i]);
    t.erase("id");
    decoder[std::to_string(first_special + i)] = t;
  }
  const ojson config = {
      {"add_bos_token", f.bos.has_value()},
      {"added_tokens_decoder", decoder},
      {"bos_token", f.bos ? ojson(f.specials[*f.bos]) : ojson(nullptr)},
      {"chat_template", f.chat_template},
      {"clean_up_tokenization_spaces", false},
      {"eos_token", f.specials[f.eos.front()]},
      {"model_max_length", 131072},
      {"tokenizer_class", "PreTrainedTokenizerFast"}};
  core::write_file_atomic(dir / "tokenizer.json", tokenizer.dump(2));
  core::write_file_atomic(dir / "tokenizer_config.json", config.dump(2));
  return info;
}

TinyTokenizerInfo write_mistral(const std::filesystem::path& dir, std::string_view corpus, int vocab_size,
                                std::uint64_t seed) {
  const spm::Library& sentencepiece = spm::library();
  sentencepiece.set_random_seed(static_cast<unsigned int>(seed));
  // Mistral's tokenizer.model settings (docs/tokenizers.md §9): BPE, byte_fallback, identity
  // normalization, dummy prefix, no whitespace collapsing, digits split.
  const std::unordered_map<std::string, std::string> args = {
      {"model_type", "bpe"},
      {"vocab_size", std::to_string(vocab_size)},
      {"byte_fallback", "true"},
      {"control_symbols", "[INST],[/INST]"},
      {"unk_id", "0"},
      {"bos_id", "1"},
      {"eos_id", "2"},
      {"pad_id", "-1"},
      {"normalization_rule_name", "identity"},
      {"remove_extra_whitespaces", "false"},
      {"add_dummy_prefix", "true"},
      {"split_digits", "true"},
      {"allow_whitespace_only_pieces", "true"},
      {"character_coverage", "1.0"},
      {"hard_vocab_limit", "false"},
      {"max_sentence_length", "1000000"},
      {"input_sentence_size", "0"},
      {"shuffle_input_sentence", "false"},
      {"num_threads", "1"},  // one thread: the merges must not depend on scheduling
      {"minloglevel", "2"},  // errors only: the trainer logs every step otherwise
  };
  std::string model;
  if (const auto error = sentencepiece.train(args, corpus, &model); !error.empty())
    fail("tiny mistral tokenizer: sentencepiece training failed: {}", error);
  std::string error;
  const auto sp = sentencepiece.load(model, &error);
  if (!sp) fail("tiny mistral tokenizer: {}", error);

  ojson decoder = ojson::object();
  for (int id = 0; id < 5; ++id) {
    ojson t = added_token_json(id, sp->id_to_piece(id));
    t.erase("id");
    decoder[std::to_string(id)] = t;
  }
  const ojson config = {
      {"add_bos_token", true},
      {"add_eos_token", false},
      {"added_tokens_decoder", decoder},
      {"bos_token", "<s>"},
      {"chat_template", mistral_chat_template()},
      {"eos_token", "</s>"},
      {"legacy", false},
      {"model_max_length", 32768},
      {"tokenizer_class", "LlamaTokenizer"},
      {"unk_token", "<unk>"}};
  core::write_file_atomic(dir / "tokenizer.model", model);
  core::write_file_atomic(dir / "tokenizer_config.json", config.dump(2));
  return {sp->piece_size(), sp->bos_id(), {sp->eos_id()}, "mistral-v0.3"};
}

}  // namespace

TinyTokenizerInfo write_tiny_tokenizer(const std::filesystem::path& dir, std::string_view family, std::string_view corpus,
                                       int vocab_size, std::uint64_t seed) {
  std::filesystem::create_directories(dir);
  if (family == "llama") return write_byte_level(dir, llama_family(), corpus, vocab_size);
  if (family == "qwen2") return write_byte_level(dir, qwen2_family(), corpus, vocab_size);
  if (family == "mistral") return write_mistral(dir, corpus, vocab_size, seed);
  fail("tiny tokenizer: unknown family {:?} (llama, qwen2, mistral)", family);
}

}  // namespace kvlab::harness
