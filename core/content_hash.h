// Content hashes for run provenance: which dump, which checkpoint a result came from, robust to
// renames and copies (a path is not an identity; bytes are). XXH3-128 (libxxhash), printed as
// 32 lowercase hex digits exactly as `xxhsum -H2 FILE` prints them, so a reader can verify a
// stored hash with that tool. Not cryptographic: it tells versions apart, it does not resist
// forgery. Speed: memory bandwidth once the file is in the page cache (bench/README.md).
#pragma once

#include <filesystem>
#include <string>

namespace kvlab::core {

// XXH3-128 of a file's bytes, streamed in 8 MiB blocks. Errors name the file.
std::string file_hash(const std::filesystem::path& path);

// A checkpoint directory's identity: XXH3-128 of a manifest with one line per file the harness
// reads — every non-hidden top-level regular file ending in .json, .safetensors or .model
// (config, generation config, tokenizer files, shard index, weights) — in name order:
// "<name>\t<size>\t<file_hash>\n". READMEs, licences and git metadata do not change it. A plain
// file (a single .safetensors) hashes as file_hash. Errors name the directory.
std::string checkpoint_hash(const std::filesystem::path& path);

}  // namespace kvlab::core
