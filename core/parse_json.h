// JSON text → nlohmann::json, with the one error kvlab gives for malformed input:
// "<source>: not valid JSON (<parser's reason>)".
#pragma once

#include <nlohmann/json.hpp>
#include <string_view>

#include "core/error.h"

namespace kvlab::core {

inline nlohmann::json parse_json(std::string_view text, std::string_view source) {
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON ({})", source, e.what());
  }
}

}  // namespace kvlab::core
