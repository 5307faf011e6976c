// The fan-out backend.h describes (set_threads): many independent calls run side by side, one
// host thread each, with the backend at one thread per call meanwhile, so only one layer of
// threads works. Restores the backend's thread count on the way out, exceptions included.
#pragma once

#include "linalg/backend.h"

namespace kvlab::linalg {

class OneThreadPerCall {
 public:
  // Sets `backend` to one thread per call when `workers` > 1 (one worker keeps its threads).
  OneThreadPerCall(Backend& backend, int workers) : backend_(backend), threads_(backend.threads()), set_(workers > 1) {
    if (set_) backend_.set_threads(1);
  }
  ~OneThreadPerCall() {
    if (set_) backend_.set_threads(threads_);
  }
  OneThreadPerCall(const OneThreadPerCall&) = delete;
  OneThreadPerCall& operator=(const OneThreadPerCall&) = delete;

 private:
  Backend& backend_;
  int threads_;
  bool set_;
};

}  // namespace kvlab::linalg
