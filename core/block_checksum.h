// Per-block XXH3-64 checksums of a dataset's stored bytes (docs/dump-format.md §10).
//
// HDF5 checksums its own metadata in the 1.10 file format, but never the raw data, and a
// chunk it cannot find reads as fill values (zeros) without an error. So a dump stores, for each
// dataset, the XXH3-64 (seed 0) of every block of `block_rows` rows of the dataset as stored:
// rows [b·R, min((b+1)·R, rows)), row-major, little-endian, exactly the bytes h5py's
// `ds[b*R:(b+1)*R].tobytes()` gives. Blocks are the dataset's chunks, so a token range is
// verified by hashing only the chunks it reads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace kvlab::core {

struct BlockChecksums {
  std::int64_t block_rows = 0;        // R ≥ 1; 0: the dataset has no checksums (format version 1)
  std::vector<std::uint64_t> hashes;  // [ceil(rows / R)]

  bool present() const { return block_rows > 0; }
  // Blocks of a dataset with `rows` rows: ceil(rows / R).
  static std::int64_t count(std::int64_t rows, std::int64_t block_rows);
};

// XXH3-64 (seed 0) of one block's stored bytes.
std::uint64_t block_hash(std::span<const std::byte> bytes);

// Checks block `block` against its stored hash; `bytes` is that block's stored bytes. A
// mismatch is an Error naming `where`, the block's rows [first_row, first_row + rows) and both
// hashes.
void verify_block(const BlockChecksums& sums, std::int64_t block, std::span<const std::byte> bytes,
                  std::int64_t first_row, std::int64_t rows, const std::string& where);

}  // namespace kvlab::core
