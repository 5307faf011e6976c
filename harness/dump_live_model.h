// A dump's sample with the model that made it, for methods that run the model on a dumped cache
// (`kvlab compress DUMP --model DIR --method kvzip`). Torch-free header: the CLI includes it
// without compiling libtorch's.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "compressors/live_model.h"
#include "core/kv_dump.h"

namespace kvlab::harness {

// Loads the checkpoint in `model_dir` (CPU, f32), checks that its shape is the dump's, and fills
// its cache with the sample's dumped keys and values (keys rotated as the model rotates them at
// the dumped positions), so probes attend to the cache exactly as dumped. The tokenizer and chat
// template are the checkpoint's, the template chosen as the dump records (its `chat_template`).
// Fails naming what is missing: a sample without token ids, a checkpoint of another shape.
std::unique_ptr<compressors::LiveModel> live_model_for_dump(const std::filesystem::path& model_dir,
                                                            const core::DumpReader& dump, const std::string& sample);

}  // namespace kvlab::harness
