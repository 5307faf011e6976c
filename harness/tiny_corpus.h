// The text tiny tokenizers are trained on: kvlab's own READMEs (README.md, bench/README.md), embedded at build time so
// `kvlab make-tiny-model` works from any directory (no download, nothing outside the binary).
#pragma once

#include <string_view>

namespace kvlab::harness {

std::string_view tiny_corpus();

}  // namespace kvlab::harness
