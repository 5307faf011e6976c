#include "core/block_checksum.h"

#include <xxhash.h>

#include "core/error.h"

namespace kvlab::core {

std::int64_t BlockChecksums::count(std::int64_t rows, std::int64_t block_rows) {
  return (rows + block_rows - 1) / block_rows;
}

std::uint64_t block_hash(std::span<const std::byte> bytes) { return XXH3_64bits(bytes.data(), bytes.size()); }

void verify_block(const BlockChecksums& sums, std::int64_t block, std::span<const std::byte> bytes,
                  std::int64_t first_row, std::int64_t rows, const std::string& where) {
  const std::uint64_t stored = sums.hashes[static_cast<std::size_t>(block)];
  const std::uint64_t computed = block_hash(bytes);
  if (computed != stored)
    fail("{}: checksum mismatch in rows [{}, {}) (stored xxh3 {:016x}, computed {:016x}): the file is corrupt",
         where, first_row, first_row + rows, stored, computed);
}

}  // namespace kvlab::core
