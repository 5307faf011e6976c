#!/usr/bin/env python3
"""A random-weight checkpoint with a real model's shapes, for timing prefill and compression.

kvlab make-tiny-model draws its weights one by one on the CPU (seeded, reproducible), which is
right for tests but takes minutes for 8B parameters; this script draws them with torch on the
GPU (or CPU) and writes one model.safetensors in bf16. The tokenizer and the token ids come
from a kvlab tiny model (TOKENIZER_DIR, e.g. `kvlab make-tiny-model --arch llama --out tok`),
so the vocabulary is the tiny one's (a few thousand rows, not 128256): the embedding and
lm_head are smaller than the real model's, every other shape is the real model's.

  python3 bench/reference/random_checkpoint.py TOKENIZER_DIR OUT_DIR [--shape llama-3.1-8b]
"""
import argparse
import json
import pathlib
import shutil

import torch
from safetensors.torch import save_file

SHAPES = {
    # hidden, intermediate, layers, heads, kv heads, head dim, rope (Llama-3.1's)
    "llama-3.1-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=8, head_dim=128, max_position_embeddings=131072, rope_theta=500000.0,
                         rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                       "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}),
}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("tokenizer_dir", type=pathlib.Path)
    p.add_argument("out", type=pathlib.Path)
    p.add_argument("--shape", default="llama-3.1-8b", choices=sorted(SHAPES))
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    config = json.loads((a.tokenizer_dir / "config.json").read_text())
    if config.get("model_type") != "llama":
        raise SystemExit(f"{a.tokenizer_dir}: expected a llama tiny model, found {config.get('model_type')}")
    config.update(SHAPES[a.shape])
    config["torch_dtype"] = "bfloat16"
    config["kvlab_random_checkpoint"] = {"shape": a.shape, "seed": a.seed}
    d, inter, vocab = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    dq = config["num_attention_heads"] * config["head_dim"]
    dkv = config["num_key_value_heads"] * config["head_dim"]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator(device=device).manual_seed(a.seed)

    def normal(shape, mean, std):
        t = torch.randn(shape, generator=gen, device=device, dtype=torch.float32) * std + mean
        return t.to(torch.bfloat16).cpu()

    w = {"model.embed_tokens.weight": normal((vocab, d), 0, 1)}
    for l in range(config["num_hidden_layers"]):
        pre = f"model.layers.{l}."
        w[pre + "input_layernorm.weight"] = normal((d,), 1, 0.1)
        w[pre + "post_attention_layernorm.weight"] = normal((d,), 1, 0.1)
        for name, shape, fan_in in [("self_attn.q_proj", (dq, d), d), ("self_attn.k_proj", (dkv, d), d),
                                    ("self_attn.v_proj", (dkv, d), d), ("self_attn.o_proj", (d, dq), dq),
                                    ("mlp.gate_proj", (inter, d), d), ("mlp.up_proj", (inter, d), d),
                                    ("mlp.down_proj", (d, inter), inter)]:
            w[pre + name + ".weight"] = normal(shape, 0, fan_in ** -0.5)
    w["model.norm.weight"] = normal((d,), 1, 0.1)
    w["lm_head.weight"] = normal((vocab, d), 0, d ** -0.5)
    a.out.mkdir(parents=True, exist_ok=True)
    for f in a.tokenizer_dir.iterdir():
        if f.name.startswith("tokenizer") or f.name == "generation_config.json":
            shutil.copy(f, a.out / f.name)
    save_file(w, str(a.out / "model.safetensors"), metadata={"format": "pt"})
    (a.out / "config.json").write_text(json.dumps(config, indent=2) + "\n")  # last: the folder is complete
    params = sum(t.numel() for t in w.values())
    print(f"wrote {a.out}: {a.shape} shapes, vocab {vocab}, {params / 1e9:.2f} B parameters (bf16)")


if __name__ == "__main__":
    main()
