#!/usr/bin/env python3
"""The obvious numpy/h5py cross-layer analysis a researcher would write: the baseline
that `kvlab analyze` is measured against (bench/README.md).

Per kind (key, value) of one sample:
  * token-wise cosine: normalise each layer's rows, mean over tokens of the row dot product
    (whole layer and per head; zero rows excluded pairwise);
  * channel cosine (xKV notebook's cosine_similarity(dim=0) variant);
  * linear CKA by the feature-space formula, one call per layer pair (as
    google-research/representation_similarity's feature_space_linear_cka);
  * eigen-rank: np.linalg.svd of each concatenated group [X_l .. X_{l+G-1}] (no centring).
Writes a JSON with the same fields as kvlab's analysis.json (plus spectra).

Usage: analysis_ref.py DUMP.h5 --out ref.json [--sample ID] [--groups 1,2,4,8]
       [--energy 0.9,0.95,0.99] [--kind key|value|both]
Needs Debian's python3-numpy and python3-h5py (run with /usr/bin/python3).
"""
import argparse
import json
import time

import h5py
import numpy as np


def load_layer(ds):
    """A layer dataset [T, H, D] as float32 [T, H*D]; bf16 (stored as uint16) is widened."""
    raw = ds[()]
    if ds.attrs.get("dtype", b"") in (b"bfloat16", "bfloat16"):
        raw = (raw.astype(np.uint32) << 16).view(np.float32)
    raw = raw.astype(np.float32)
    return raw.reshape(raw.shape[0], -1)


def feature_space_linear_cka(x, y):
    x = x - x.mean(axis=0, keepdims=True)
    y = y - y.mean(axis=0, keepdims=True)
    dot = np.linalg.norm(x.T @ y) ** 2
    return float(dot / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def normalise_rows(x):
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    valid = norms[:, 0] > 0
    return np.where(norms > 0, x / np.where(norms > 0, norms, 1), 0), valid


def token_cosine(layers):
    n = len(layers)
    normed = [normalise_rows(x) for x in layers]
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            (a, va), (b, vb) = normed[i], normed[j]
            both = va & vb
            out[i, j] = np.sum(a[both] * b[both], axis=1).mean() if both.any() else np.nan
    return out


def channel_cosine(layers):
    n = len(layers)
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            a, b = layers[i], layers[j]
            na, nb = np.linalg.norm(a, axis=0), np.linalg.norm(b, axis=0)
            ok = (na > 0) & (nb > 0)
            out[i, j] = np.mean(np.sum(a[:, ok] * b[:, ok], axis=0, dtype=np.float64) / (na[ok] * nb[ok]))
    return out


def rank_for_energy(spectrum, energy):
    total = spectrum.sum()
    if total <= 0:
        return 0
    cumulative = np.cumsum(spectrum)
    return int(np.searchsorted(cumulative, energy * total * (1 - 1e-12)) + 1)


def analyze_kind(layers, heads, groups, energies):
    n_layers = len(layers)
    width = layers[0].shape[1]
    head_dim = width // heads
    timings = {}
    t = time.perf_counter()
    result = {"token_cosine": token_cosine(layers).tolist()}
    result["head_token_cosine"] = [
        token_cosine([x[:, h * head_dim:(h + 1) * head_dim] for x in layers]).tolist() for h in range(heads)]
    result["channel_cosine"] = channel_cosine(layers).tolist()
    timings["cosines"] = time.perf_counter() - t

    t = time.perf_counter()
    cka = np.eye(n_layers)
    for i in range(n_layers):
        for j in range(i + 1, n_layers):
            cka[i, j] = cka[j, i] = feature_space_linear_cka(layers[i], layers[j])
    result["cka"] = cka.tolist()
    timings["cka"] = time.perf_counter() - t

    t = time.perf_counter()
    ranks = []
    for g in groups:
        entry = {"group_size": g, "groups": []}
        for first in range(0, n_layers - g + 1, g):
            z = np.concatenate(layers[first:first + g], axis=1)
            s = np.linalg.svd(z, compute_uv=False)
            spectrum = (s.astype(np.float64) ** 2)
            r = [rank_for_energy(spectrum, e) for e in energies]
            entry["groups"].append({"first_layer": first, "rank": r,
                                    "rank_fraction": [k / (g * width) for k in r],
                                    "spectrum": spectrum.tolist()})
        entry["mean_rank_fraction"] = [float(np.mean([grp["rank_fraction"][e] for grp in entry["groups"]]))
                                       for e in range(len(energies))]
        ranks.append(entry)
    result["eigen_rank"] = ranks
    timings["eigen_rank"] = time.perf_counter() - t
    result["timings"] = timings
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dump")
    parser.add_argument("--out", required=True)
    parser.add_argument("--sample")
    parser.add_argument("--kind", default="both", choices=["key", "value", "both"])
    parser.add_argument("--groups", default="1,2,4,8")
    parser.add_argument("--energy", default="0.9,0.95,0.99")
    args = parser.parse_args()
    groups = [int(g) for g in args.groups.split(",")]
    energies = [float(e) for e in args.energy.split(",")]
    kinds = ["key", "value"] if args.kind == "both" else [args.kind]
    out = {"energies": energies, "kinds": {}}
    with h5py.File(args.dump, "r") as f:
        sample = args.sample or sorted(f["samples"].keys())[0]
        heads = int(f.attrs["num_kv_heads"])
        n_layers = int(f.attrs["num_layers"])
        for kind in kinds:
            start = time.perf_counter()
            layers = [load_layer(f[f"samples/{sample}/layers/{l}/{kind}"]) for l in range(n_layers)]
            result = analyze_kind(layers, heads, [g for g in groups if g <= n_layers], energies)
            result["seconds"] = time.perf_counter() - start
            out["kinds"][kind] = result
            del layers
    with open(args.out, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
