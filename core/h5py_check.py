"""Checks that a kvlab dump opens in plain h5py, with no kvlab knowledge.

Usage: h5py_check.py DUMP DTYPE   (DTYPE: f32 | f16 | bf16)

The dump is the one core/kv_dump_test.cpp (H5pyInterop) writes: 2 layers, H_kv=2, H_q=4,
D=8, one sample "s0" with T=40 tokens and a query window W=4; layer l's key holds
exact_values(n, l), its value exact_values(n, 0.5), its query exact_values(n, -1).
The block checksums (xxh3_64, xxh3_block_rows; docs/dump-format.md §6) are recomputed here
with libxxhash's own XXH3_64bits through ctypes, independently of kvlab's code.
Exit code 0 when every check passes; otherwise the first failed check is printed.
"""
import ctypes
import ctypes.util
import sys

import h5py
import numpy as np

LAYERS, KV_HEADS, Q_HEADS, HEAD_DIM, TOKENS, WINDOW = 2, 2, 4, 8, 40, 4


def exact_values(shape, offset):
    """The test's values: multiples of 1/4 in [-32, 32) plus an offset, exact in every dtype."""
    i = np.arange(int(np.prod(shape)))
    return ((i % 256 - 128) / 4 + offset).astype(np.float32).reshape(shape)


def xxh3_64():
    lib = ctypes.CDLL(ctypes.util.find_library("xxhash") or "libxxhash.so.0")
    lib.XXH3_64bits.restype = ctypes.c_uint64
    lib.XXH3_64bits.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    return lambda data: lib.XXH3_64bits(data, len(data))


def text(value):
    """A string attribute: fixed-length ones come back from h5py as bytes."""
    return value.decode("utf-8") if isinstance(value, bytes) else value


def check_checksums(dataset, hash_bytes):
    rows = dataset.attrs["xxh3_block_rows"]
    hashes = dataset.attrs["xxh3_64"]
    n = dataset.shape[0]
    assert len(hashes) == (n + rows - 1) // rows, f"{dataset.name}: {len(hashes)} checksums for {n} rows"
    for b, stored in enumerate(hashes):
        block = np.ascontiguousarray(dataset[b * rows:(b + 1) * rows]).astype(dataset.dtype.newbyteorder("<"))
        assert hash_bytes(block.tobytes()) == int(stored), f"{dataset.name}: block {b} checksum differs"


def as_float32(dataset, dtype):
    data = dataset[()]
    if dtype == "bf16":  # uint16 holding the upper half of an f32
        assert data.dtype == np.uint16, f"{dataset.name}: dtype {data.dtype}, expected uint16"
        assert text(dataset.attrs["dtype"]) == "bfloat16", f"{dataset.name}: attribute dtype {dataset.attrs['dtype']!r}"
        return (data.astype(np.uint32) << 16).view(np.float32)
    expected = {"f32": np.float32, "f16": np.float16}[dtype]
    assert data.dtype == expected, f"{dataset.name}: dtype {data.dtype}, expected {np.dtype(expected)}"
    return data.astype(np.float32)


def check(path, dtype):
    with h5py.File(path, "r") as f:
        root = f.attrs
        assert root["format_version"] == 2, root["format_version"]
        for name in ("model_id", "model_config", "kvlab_version", "git_revision", "created_utc", "dtype"):
            assert isinstance(text(root[name]), str), f"root attribute {name} is {type(root[name])}, not a string"
        assert text(root["model_id"]) == "synthetic", root["model_id"]
        assert text(root["dtype"]) == {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}[dtype], root["dtype"]
        hash_bytes = xxh3_64()
        assert (root["num_layers"], root["num_kv_heads"], root["head_dim"]) == (LAYERS, KV_HEADS, HEAD_DIM)

        sample = f["samples/s0"]
        assert sample.attrs["num_tokens"] == TOKENS and sample.attrs["query_window"] == WINDOW
        assert sample["tokens"].dtype == np.int32 and sample["tokens"].shape == (TOKENS,)
        assert sample["positions"].dtype == np.int64 and sample["positions"].shape == (TOKENS,)
        check_checksums(sample["tokens"], hash_bytes)
        check_checksums(sample["positions"], hash_bytes)
        for layer in range(LAYERS):
            tensors = {
                "key": ((TOKENS, KV_HEADS, HEAD_DIM), float(layer)),
                "value": ((TOKENS, KV_HEADS, HEAD_DIM), 0.5),
                "query": ((WINDOW, Q_HEADS, HEAD_DIM), -1.0),
            }
            for kind, (shape, offset) in tensors.items():
                dataset = sample[f"layers/{layer}/{kind}"]
                assert dataset.shape == shape, f"{dataset.name}: shape {dataset.shape}, expected {shape}"
                check_checksums(dataset, hash_bytes)
                values = as_float32(dataset, dtype)
                assert np.array_equal(values, exact_values(shape, offset)), f"{dataset.name}: values differ"


def main():
    path, dtype = sys.argv[1], sys.argv[2]
    try:
        check(path, dtype)
    except AssertionError as error:
        print(f"h5py_check: {path}: {error}", file=sys.stderr)
        return 1
    print(f"h5py_check: {path} ({dtype}) reads fine in plain h5py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
