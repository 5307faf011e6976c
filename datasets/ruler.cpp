#include "datasets/ruler.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "datasets/rng.h"
#include "datasets/ruler_families.h"
#include "datasets/ruler_sizing.h"

namespace kvlab::datasets {

namespace {

std::string_view haystack_name(HaystackKind k) {
  switch (k) {
    case HaystackKind::noise: return "noise";
    case HaystackKind::essay: return "essay";
    case HaystackKind::needle: return "needle";
    case HaystackKind::none: return "none";
  }
  return "?";
}

// The haystack a task uses under `options` (validating the override).
HaystackKind resolve_haystack(const RulerTaskSpec& spec, const RulerOptions& options) {
  if (!options.haystack) return spec.haystack;
  const HaystackKind want = *options.haystack;
  const bool overridable = (spec.family == RulerFamily::niah && spec.haystack != HaystackKind::needle) ||
                           spec.family == RulerFamily::variable_tracking;
  if (!overridable) {
    fail("ruler:{}: its haystack ({}) cannot be replaced; only niah tasks with noise/essay haystacks and vt take one",
         spec.name, haystack_name(spec.haystack));
  }
  if (want != HaystackKind::noise && want != HaystackKind::essay) {
    fail("ruler:{}: haystack must be noise or essay (got {})", spec.name, haystack_name(want));
  }
  return want;
}

bool needs_words(const RulerTaskSpec& spec) {
  if (spec.family == RulerFamily::common_words) return true;
  return spec.family == RulerFamily::niah &&
         (spec.key_type == NeedleType::words || spec.value_type == NeedleType::words);
}

}  // namespace

RulerResources load_ruler_resources(RulerTask task, const RulerOptions& options, const RulerResourcePaths& paths) {
  const RulerTaskSpec& spec = ruler_task_spec(task);
  RulerResources r;
  if (needs_words(spec)) r.words = std::make_shared<const WordList>(WordList::load(paths.words));
  if (resolve_haystack(spec, options) == HaystackKind::essay) {
    if (paths.essay.empty()) {
      fail("ruler:{} uses an essay haystack: give a text file (RULER uses Paul Graham's essays), or the noise haystack",
           spec.name);
    }
    r.essay = std::make_shared<const EssayHaystack>(EssayHaystack::load(paths.essay));
  }
  if (spec.family == RulerFamily::qa) {
    const QaFormat format = task == RulerTask::qa_1 ? QaFormat::squad : QaFormat::hotpotqa;
    if (paths.qa.empty()) {
      fail("ruler:{} needs {}", spec.name,
           format == QaFormat::squad ? "a SQuAD JSON file (dev-v2.0.json)" : "a HotpotQA JSON file (hotpot_dev_distractor_v1.json)");
    }
    r.qa = std::make_shared<const QaCorpus>(QaCorpus::load(paths.qa, format));
  }
  return r;
}

struct RulerGenerator::Impl {
  const RulerTaskSpec* spec = nullptr;
  RulerOptions options;
  CountTokens count;
  HaystackKind haystack = HaystackKind::none;
  std::int64_t tokens_to_generate = 0;
  std::int64_t budget = 0;
  std::unique_ptr<detail::Family> family;
  std::int64_t start = 1;       // first size each sample's search tries
  double tokens_per_unit = 1;   // slope estimate from two probes
};

RulerGenerator::RulerGenerator(RulerTask task, RulerOptions options, RulerResources resources, CountTokens count_tokens)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.spec = &ruler_task_spec(task);
  const std::string_view name = m.spec->name;
  if (!count_tokens) fail("ruler:{}: no token counter given", name);
  if (options.max_seq_length <= 0) fail("ruler:{}: max_seq_length must be > 0 (got {})", name, options.max_seq_length);
  if (options.reserved_tokens < 0) fail("ruler:{}: reserved_tokens must be ≥ 0", name);
  if (options.tokens_to_generate < 0) fail("ruler:{}: tokens_to_generate must be ≥ 0 (0: the task's default)", name);
  if (options.depth_percent) {
    if (m.spec->family != RulerFamily::niah) fail("ruler:{}: a needle depth applies to niah tasks only", name);
    if (!(*options.depth_percent >= 0 && *options.depth_percent <= 100)) {
      fail("ruler:{}: depth must be in [0, 100] percent (got {})", name, *options.depth_percent);
    }
  }
  m.haystack = resolve_haystack(*m.spec, options);
  m.tokens_to_generate = options.tokens_to_generate > 0 ? options.tokens_to_generate : m.spec->tokens_to_generate;
  m.budget = options.max_seq_length - m.tokens_to_generate - options.reserved_tokens;
  if (m.budget <= 0) {
    fail("ruler:{}: max_seq_length {} leaves no room after {} tokens to generate and {} reserved", name,
         options.max_seq_length, m.tokens_to_generate, options.reserved_tokens);
  }
  m.options = options;
  m.count = std::move(count_tokens);

  detail::FamilyInput in;
  in.spec = m.spec;
  in.options = options;
  in.resources = std::move(resources);
  in.count = m.count;
  in.haystack = m.haystack;
  in.tokens_to_generate = m.tokens_to_generate;
  in.stream = detail::splitmix64(options.seed ^ detail::name_hash(name));
  switch (m.spec->family) {
    case RulerFamily::niah: m.family = detail::make_niah(in); break;
    case RulerFamily::variable_tracking: m.family = detail::make_variable_tracking(in); break;
    case RulerFamily::common_words: m.family = detail::make_common_words(in); break;
    case RulerFamily::freq_words: m.family = detail::make_freq_words(in); break;
    case RulerFamily::qa: m.family = detail::make_qa(in); break;
  }

  // Slope of tokens in haystack units from two small probes of sample 0 (RULER estimates
  // tokens per haystack unit the same way), then the size where the budget should be reached.
  const std::int64_t lo = m.family->min_units(0);
  const std::int64_t hi = std::min(lo + m.family->probe_units(), m.family->max_units());
  const auto t_lo = m.count(m.family->build(0, lo).prompt_text());
  const auto t_hi = hi > lo ? m.count(m.family->build(0, hi).prompt_text()) : t_lo;
  m.tokens_per_unit = hi > lo ? std::max(1e-3, static_cast<double>(t_hi - t_lo) / static_cast<double>(hi - lo)) : 1.0;
  const double guess = static_cast<double>(hi) + static_cast<double>(m.budget - t_hi) / m.tokens_per_unit;
  m.start = std::clamp<std::int64_t>(static_cast<std::int64_t>(std::floor(guess)), lo, m.family->max_units());
}

RulerGenerator::~RulerGenerator() = default;
RulerGenerator::RulerGenerator(RulerGenerator&&) noexcept = default;
RulerGenerator& RulerGenerator::operator=(RulerGenerator&&) noexcept = default;

TaskSample RulerGenerator::sample(std::int64_t index) const {
  const Impl& m = *impl_;
  const std::string_view name = m.spec->name;
  if (index < 0) fail("ruler:{}: sample index must be ≥ 0 (got {})", name, index);
  detail::SizeSearch search;
  search.budget = m.budget;
  search.min_units = m.family->min_units(index);
  search.max_units = m.family->max_units();
  search.start = m.start;
  search.tokens_per_unit = m.tokens_per_unit;
  const detail::SizeFit fit =
      detail::fit_size([&](std::int64_t n) { return m.count(m.family->build(index, n).prompt_text()); }, search);
  if (!fit.fits) {
    fail("ruler:{}: sample {} does not fit max_seq_length {}: the smallest haystack ({} units) takes {} tokens, plus {} "
         "to generate and {} reserved",
         name, index, m.options.max_seq_length, fit.units, fit.tokens, m.tokens_to_generate, m.options.reserved_tokens);
  }
  if (fit.units == search.max_units && search.max_units < detail::kUnbounded) {
    fail("ruler:{}: sample {}: the word list is too small to fill max_seq_length {} ({} words give {} of {} tokens); "
         "give a larger word list",
         name, index, m.options.max_seq_length, fit.units, fit.tokens, m.budget);
  }
  detail::Built b = m.family->build(index, fit.units);
  TaskSample s;
  s.id = fmt::format("{}-{}-{}", name, m.options.max_seq_length, index);
  s.task = fmt::format("ruler:{}", name);
  s.context = std::move(b.context);
  s.question = std::move(b.question);
  s.answer_prefix = std::move(b.answer_prefix);
  s.answers = std::move(b.answers);
  s.metric = std::string(m.spec->metric);
  s.max_new_tokens = m.tokens_to_generate;
  s.index = index;
  s.seed = m.options.seed;
  s.target_tokens = m.options.max_seq_length;
  s.reserved_tokens = m.options.reserved_tokens;
  s.tokens = fit.tokens;
  s.depth_percent = m.options.depth_percent.value_or(-1.0);
  s.haystack_units = fit.units;
  s.haystack_begin = b.haystack_begin;
  s.haystack_end = b.haystack_end;
  s.needles = std::move(b.needles);
  s.language = "en";
  return s;
}

std::vector<TaskSample> RulerGenerator::samples(std::int64_t count) const {
  std::vector<TaskSample> out;
  out.reserve(static_cast<std::size_t>(std::max<std::int64_t>(count, 0)));
  for (std::int64_t i = 0; i < count; ++i) out.push_back(sample(i));
  return out;
}

const RulerTaskSpec& RulerGenerator::spec() const { return *impl_->spec; }
const RulerOptions& RulerGenerator::options() const { return impl_->options; }
HaystackKind RulerGenerator::haystack() const { return impl_->haystack; }
std::int64_t RulerGenerator::tokens_to_generate() const { return impl_->tokens_to_generate; }

}  // namespace kvlab::datasets
