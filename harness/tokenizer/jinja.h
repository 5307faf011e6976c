// A small Jinja2 interpreter for the chat templates checkpoints ship in tokenizer_config.json
// (or chat_template.jinja), with the semantics transformers' apply_chat_template gives them:
// an ImmutableSandboxedEnvironment with trim_blocks, lstrip_blocks and the loopcontrols
// extension, plus its globals raise_exception and strftime_now and its tojson filter
// (json.dumps with ensure_ascii = false). docs/tokenizers.md §10 lists the subset; anything
// outside it (extends, include, import, call blocks, do, ...) is a kvlab::Error naming the line.
//
// Sandbox-minded: no file or environment access, and limits on steps, nesting, macro
// recursion, range() and output size, so a hostile template fails cleanly instead of hanging.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace kvlab::harness {

struct JinjaLimits {
  std::int64_t max_steps = 20'000'000;          // expression evaluations + loop iterations
  std::size_t max_output_bytes = 256u << 20;    // the rendered text and any one string value
  int max_nesting = 200;                        // parser depth (brackets, blocks)
  int max_call_depth = 100;                     // macro recursion
};

// Renders `source` with the variables of `context` (a JSON object: messages,
// add_generation_prompt, bos_token, enable_thinking, ...). Undefined variables render as empty
// and are falsy, as with jinja2's default Undefined. Throws kvlab::Error: "jinja template line
// N: ..." for syntax errors, unknown filters/tests, runtime type errors and raise_exception.
std::string render_jinja(std::string_view source, const nlohmann::ordered_json& context,
                         const JinjaLimits& limits = {});

}  // namespace kvlab::harness
