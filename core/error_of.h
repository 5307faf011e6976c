// Test support: the message of the kvlab::Error a callable throws, or "(no error)" when it
// throws nothing, so a test checks an error text in one line:
//   EXPECT_THAT(core::error_of([&] { load(bad); }), HasSubstr("bad.json: line 3"));
// Other exceptions propagate (the test then fails on them). Header-only; for tests.
#pragma once

#include <functional>
#include <string>

#include "core/error.h"

namespace kvlab::core {

inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace kvlab::core
