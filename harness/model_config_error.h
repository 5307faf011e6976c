// The config tests' probe (model_config_test, moe_config_test, gemma_config_test): the message
// parse_model_config gives for a config.json, or "no error".
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "harness/model_config.h"

namespace kvlab::harness {

inline std::string error_of(const nlohmann::json& config) {
  try {
    parse_model_config(config.dump());
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

}  // namespace kvlab::harness
