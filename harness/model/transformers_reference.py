#!/usr/bin/env python3
"""Hugging Face transformers itself as the reference for kvlab's decoder: the checkpoint folder
loaded by AutoModelForCausalLM in float32 with eager attention, logits of one forward pass.
The same interface as reference_llama.py (our own rewrite of HF's eager numerics), so
harness_model_tests can compare kvlab with both; this one needs a python3 with torch and
transformers (the GPU machine's image has transformers 5.x; the test skips elsewhere).

  transformers_reference.py MODEL_DIR IDS OUT.f32     IDS = "1,2,3"; OUT gets logits [S, V] as raw f32
"""
import sys

import numpy as np
import torch
from transformers import AutoModelForCausalLM


def main():
    model_dir, ids_text, out_path = sys.argv[1:4]
    ids = [int(t) for t in ids_text.split(",")]
    try:  # transformers ≥ 4.56 calls it dtype; older releases torch_dtype
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager")
    except TypeError:
        model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32, attn_implementation="eager")
    model.eval()
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    np.ascontiguousarray(logits.float().numpy()).tofile(out_path)


if __name__ == "__main__":
    main()
