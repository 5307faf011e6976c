#!/usr/bin/env python3
"""Hugging Face transformers itself as the reference for kvlab's decoder: the checkpoint folder
loaded by AutoModelForCausalLM in float32 with eager attention, logits of one forward pass.
The same interface as reference_llama.py (our own rewrite of HF's eager numerics), so
harness_model_tests can compare kvlab with both; this one needs a python3 with torch and
transformers (the GPU machine's image has transformers 5.x; the test skips elsewhere).

  transformers_reference.py MODEL_DIR IDS OUT.f32 [KV.f32]    IDS = "1,2,3"; OUT gets logits [S, V] as raw f32

KV, when given, gets what each layer's attention took as keys before RoPE and its values, caught
by forward hooks on transformers' own modules: the output of self_attn.k_norm where the layer has
one (Qwen3, Gemma-3: k_norm(k_proj(x)) reshaped to heads) else of self_attn.k_proj, and of self_attn.v_proj
(Phi-3: the k and v column slices of self_attn.qkv_proj's output);
for l in layers, keys [S, H_kv, D] then values [S, H_kv, D], raw f32.
"""
import sys

import numpy as np
import torch
from transformers import AutoModelForCausalLM


def main():
    model_dir, ids_text, out_path = sys.argv[1:4]
    kv_path = sys.argv[4] if len(sys.argv) > 4 else None
    ids = [int(t) for t in ids_text.split(",")]
    try:  # transformers ≥ 4.56 calls it dtype; older releases torch_dtype
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager")
    except TypeError:
        model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32, attn_implementation="eager")
    model.eval()
    caught = []
    for layer in model.model.layers:
        attn = layer.self_attn
        if hasattr(attn, "qkv_proj"):  # Phi-3: one projection, k and v are its column slices q | k | v
            q_cols = model.config.num_attention_heads * attn.head_dim
            kv_cols = model.config.num_key_value_heads * attn.head_dim
            for first in (q_cols, q_cols + kv_cols):
                attn.qkv_proj.register_forward_hook(
                    lambda _m, _i, out, slot=len(caught), a=first, n=kv_cols: caught[slot].append(out[..., a:a + n]))
                caught.append([])
            continue
        key_module = attn.k_norm if hasattr(attn, "k_norm") else attn.k_proj
        # Gemma3Attention applies k_norm after the transpose to [B, H_kv, S, D] (Qwen3 before it).
        heads_first = type(attn).__name__.startswith("Gemma3")
        for module in (key_module, attn.v_proj):
            transpose = heads_first and module is key_module
            module.register_forward_hook(lambda _m, _i, out, slot=len(caught), t=transpose:
                                         caught[slot].append(out.transpose(1, 2) if t else out))
            caught.append([])
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    np.ascontiguousarray(logits.float().numpy()).tofile(out_path)
    if kv_path:
        head_dim = model.model.layers[0].self_attn.head_dim
        parts = [torch.cat(outs, 1)[0].reshape(len(ids), -1, head_dim) for outs in caught]  # [S, H_kv, D]
        np.concatenate([p.float().contiguous().numpy().ravel() for p in parts]).astype(np.float32).tofile(kv_path)


if __name__ == "__main__":
    main()
