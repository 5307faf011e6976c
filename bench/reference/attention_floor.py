#!/usr/bin/env python3
"""The least an attention-error scorer must do, in numpy: the floor `kvlab compress` is measured
against (bench/README.md, "Scoring against its numpy floor").

For every layer of one sample: read keys, values and the query window with h5py; rotate queries
and keys at their positions (RoPE, when the dump's model has it); compute the window attention
twice, on the cache as dumped and on its fp16 round trip (what `--method full` stores), with the
causal mask (a query at position p sees keys at positions <= p); then the output error and the
KL divergence of the two attention distributions. Logits and outputs in float32 through BLAS
(numpy's matmul, batched over KV heads), the softmax and the KL in float64, as kvlab's scorer
computes them (compressors/attention.cpp, compressors/score.cpp).

Usage: attention_floor.py DUMP.h5 [--sample ID] [--json OUT]
Needs Debian's python3-numpy and python3-h5py (run with /usr/bin/python3).
"""
import argparse
import json
import time

import h5py
import numpy as np


def load(ds):
    """A layer dataset as float32; bf16 (stored as uint16) is widened."""
    raw = ds[()]
    if ds.attrs.get("dtype", b"") in (b"bfloat16", "bfloat16"):
        raw = (raw.astype(np.uint32) << 16).view(np.float32)
    return raw.astype(np.float32)


def inv_freq(config, head_dim):
    """The default RoPE's inverse frequencies, or None for a model without RoPE."""
    kind = config.get("rope_type") or (config.get("rope_scaling") or {}).get("rope_type") or "default"
    if kind == "none":
        return None
    if kind != "default":
        raise SystemExit(f"attention_floor.py: rope_type {kind!r} is not implemented here")
    base = float(config.get("rope_theta", 10000.0))
    return (1.0 / base ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim)).astype(np.float32)


def rotate(x, positions, freq):
    """x [n, heads, D] rotated at positions [n] (HF's rotate_half pairing j <-> j + D/2)."""
    if freq is None:
        return x
    angle = positions[:, None].astype(np.float32) * freq[None, :]
    cos, sin = np.cos(angle)[:, None, :], np.sin(angle)[:, None, :]
    half = x.shape[-1] // 2
    a, b = x[..., :half], x[..., half:]
    return np.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)


def attention(q, k, v, visible):
    """q [H_kv, M, D], k/v [H_kv, T, D], visible [M, T] -> (log p [H_kv, M, T] f64, out [H_kv, M, D])."""
    logits = (q @ k.transpose(0, 2, 1)) / np.float32(np.sqrt(q.shape[-1]))
    logits = np.where(visible[None], logits.astype(np.float64), -np.inf)
    logits -= logits.max(axis=-1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    out = np.exp(logp).astype(np.float32) @ v
    return logp, out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dump")
    ap.add_argument("--sample", default=None)
    ap.add_argument("--json", default=None, help="write the scores and the time here")
    args = ap.parse_args()
    start = time.perf_counter()
    with h5py.File(args.dump, "r") as f:
        config = json.loads(f.attrs["model_config"])
        head_dim = int(f.attrs["head_dim"])
        freq = inv_freq(config, head_dim)
        sample = f["samples"][args.sample or sorted(f["samples"].keys())[0]]
        positions = sample["positions"][()]
        kl_sum, kl_count, err2, norm2 = 0.0, 0, 0.0, 0.0
        for name in sorted(sample["layers"].keys(), key=int):
            layer = sample["layers"][name]
            key, value, query = load(layer["key"]), load(layer["value"]), load(layer["query"])
            T, H, D = key.shape
            W, Hq, _ = query.shape
            rep = Hq // H
            qpos = positions[T - W:]
            q = rotate(query, qpos, freq).reshape(W, H, rep, D).transpose(1, 0, 2, 3).reshape(H, W * rep, D)
            visible = np.repeat(positions[None, :] <= qpos[:, None], rep, axis=0)  # [W·rep, T], row w·rep + r
            results = []
            for k, v in ((key, value), (key.astype(np.float16).astype(np.float32), value.astype(np.float16).astype(np.float32))):
                k_rot = rotate(k, positions, freq).transpose(1, 0, 2)
                results.append(attention(q, np.ascontiguousarray(k_rot), np.ascontiguousarray(v.transpose(1, 0, 2)), visible))
            (logp, out), (logq, out_c) = results
            with np.errstate(invalid="ignore"):
                terms = np.where(np.isfinite(logq), np.exp(logq) * (logq - logp), 0.0)
            kl_sum += float(np.maximum(terms.sum(axis=-1), 0.0).sum())
            kl_count += terms.shape[0] * terms.shape[1]
            err2 += float(((out.astype(np.float64) - out_c) ** 2).sum())
            norm2 += float((out.astype(np.float64) ** 2).sum())
    seconds = time.perf_counter() - start
    result = {"attn_kl": kl_sum / kl_count, "attn_output_error": float(np.sqrt(err2 / norm2)), "seconds": seconds}
    print(json.dumps(result))
    if args.json:
        with open(args.json, "w") as out_file:
            json.dump(result, out_file)


if __name__ == "__main__":
    main()
