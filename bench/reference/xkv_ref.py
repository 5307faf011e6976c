#!/usr/bin/env python3
"""What the xKV authors' code does (abdelfattah-lab/xKV `fake_svd` + `grouped_layer_merging`,
docs/methods/svd-xkv.md §2), on a kvlab dump: the baseline `bench_xkv` is measured against.

Per kind (key, value) and per group of G consecutive layers [start, end]:
  X = [X_l ... X_{l+G-1}] in R^{T x (G*H*D)}  (layer-major, then head, then channel; keys pre-RoPE,
      as dumped), torch.linalg.svd(X, full_matrices=False) in fp32 (the authors' exact SVD),
  truncate to rank r, reconstruct X_hat = U_r diag(S_r) Vh_r, relative Frobenius error
  ||X - X_hat|| / ||X|| (evaluated in f64).
The authors run this on the GPU in the cache dtype cast to fp32: --device cuda does the same
(torch.linalg.svd on the GPU, cuSOLVER); the default runs on the CPU with torch's LAPACK (gesdd).
On the GPU, svd_seconds counts only the SVD and the reconstruction (the group already on the
device, synchronised before and after): the authors' cache lives there.

Usage: xkv_ref.py DUMP.h5 --out ref.json [--sample ID] [--g 4] [--rk 384] [--rv 576]
       [--start 0] [--end -1] [--threads N] [--device cpu|cuda]
Needs torch, h5py and numpy: Debian's python3-torch (CPU) here, the device machine's own PyTorch there.
"""
import argparse
import json
import time

import h5py
import numpy as np
import torch

from analysis_ref import load_layer  # the same reader as the analysis reference (bench/reference/)


def groups(start, end, g):
    """generate_consecutive_layer_groups: [start, start+g-1], ..., the last cut at end."""
    out, first = [], start
    while first <= end:
        out.append(list(range(first, min(first + g - 1, end) + 1)))
        first += g
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dump")
    ap.add_argument("--out", required=True)
    ap.add_argument("--sample", default=None)
    ap.add_argument("--g", type=int, default=4)
    ap.add_argument("--rk", type=int, default=384)
    ap.add_argument("--rv", type=int, default=None, help="default round(1.5*rk)")
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--end", type=int, default=-1)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = ap.parse_args()
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    rv = args.rv if args.rv is not None else int(round(1.5 * args.rk))

    t_start = time.perf_counter()
    f = h5py.File(args.dump, "r")
    sample = args.sample or sorted(f["samples"].keys())[0]
    layers_grp = f["samples"][sample]["layers"]
    n_layers = len(layers_grp.keys())
    end = n_layers - 1 if args.end == -1 else args.end
    result = {"dump": args.dump, "sample": sample, "g": args.g, "rk": args.rk, "rv": rv, "groups": [],
              "threads": torch.get_num_threads(), "torch": torch.__version__, "device": args.device}
    read_s = svd_s = 0.0
    for grp in groups(args.start, end, args.g):
        entry = {"layers": grp}
        for kind, rank in (("key", args.rk), ("value", rv)):
            t0 = time.perf_counter()
            x = torch.from_numpy(np.concatenate([load_layer(layers_grp[str(l)][kind]) for l in grp], axis=1)).to(dev)
            sync()
            t1 = time.perf_counter()
            u, s, vh = torch.linalg.svd(x, full_matrices=False)
            r = min(rank, s.shape[0])  # slicing silently returns fewer when T < r (docs/methods/svd-xkv.md §2)
            x_hat = u[:, :r] @ torch.diag(s[:r]) @ vh[:r, :]
            # The error itself in f64: an fp32 norm over T·G·H·D terms is off by ~1e-4 relative.
            sync()
            t2 = time.perf_counter()
            err = float(torch.linalg.norm((x - x_hat).double()) / torch.linalg.norm(x.double()))
            read_s += t1 - t0
            svd_s += t2 - t1
            entry[kind] = {"rank": rank, "effective_rank": r, "rel_error": err}
        result["groups"].append(entry)
    result["read_seconds"] = read_s
    result["svd_seconds"] = svd_s
    result["total_seconds"] = time.perf_counter() - t_start
    with open(args.out, "w") as out:
        json.dump(result, out, indent=1)
    print(f"xkv_ref: {len(result['groups'])} groups, read {read_s:.2f} s, svd+reconstruct {svd_s:.2f} s, "
          f"total {result['total_seconds']:.2f} s")


if __name__ == "__main__":
    main()
