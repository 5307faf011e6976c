#!/usr/bin/python3
"""Independent reference for kvlab's decoder on Gemma-2 and Gemma-3 (text) checkpoints:
transformers' eager Gemma2ForCausalLM (src/transformers/models/gemma2/modeling_gemma2.py) and
Gemma3ForCausalLM (models/gemma3/modeling_gemma3.py) rewritten module by module —
Gemma2RMSNorm / Gemma3RMSNorm (x·rsqrt(mean(x²) + eps) in fp32, times (1 + w) in fp32, then cast),
Gemma2MLP (down(act(gate(x)) · up(x)), act = ACT2FN[hidden_activation]), Gemma2Attention /
Gemma3Attention (scaling = query_pre_attn_scalar ** -0.5; Gemma-3's q_norm/k_norm over head_dim
before RoPE; the layer's sliding_window when layer_types says sliding_attention), Gemma-2's
eager_attention_forward (scores soft-capped, cap·tanh(scores / cap), before the additive mask;
softmax in fp32), the decoder layer's four norms (input, post_attention on the attention output,
pre_feedforward, post_feedforward on the MLP output), the embeddings times √hidden_size cast to
their dtype, Gemma-3's two rotary embeddings (rope_theta with rope_scaling for global layers,
rope_local_base_freq with the default rule for sliding ones), the final logit soft-capping — in
PyTorch, reading config.json and model.safetensors with nothing but json and numpy
(reference_llama.py's loader and RoPE rules, reference_qwen3.py's command line and
decoder_forward). No kvlab code is on its path. Runs on the torch of Debian's /usr/bin/python3 (1.13).

  reference_gemma.py MODEL_DIR IDS OUT.f32 [KV.f32 [PREFILL]]

IDS = "1,2,3". OUT gets the logits [S, V] as raw f32. KV, when given, gets each layer's keys before
RoPE (k_proj(x); Gemma-3: k_norm of it — what kvlab's dump and cache hold) and its values: for l in
layers, keys [S, H_kv, D] then values [S, H_kv, D], raw f32. PREFILL = N (0 < N ≤ S) runs the
first N tokens as one forward and then the others one at a time from a cache of rotated keys (all
of them kept: the sliding mask, not the cache, limits what a sliding layer sees), as transformers'
DynamicCache does; the logits and KV rows are those of every token in order."""
import os
import sys

import torch
from torch import nn

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_qwen3  # noqa: E402
from reference_llama import inv_freq  # noqa: E402
# Gemma2MLP is Qwen3MLP's formula (gate, up, down without bias); repeat_kv and apply_rotary_pos_emb
# are the same lines in both modeling files.
from reference_qwen3 import ACT2FN, apply_rotary_pos_emb, linear, repeat_kv  # noqa: E402
from reference_qwen3 import Qwen3MLP as GemmaMLP  # noqa: E402

# Gemma2Config's and Gemma3TextConfig's __init__ defaults (configuration_gemma2.py,
# configuration_gemma3.py), for keys a config.json leaves out.
GEMMA2_DEFAULTS = dict(vocab_size=256000, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
                       num_attention_heads=8, num_key_value_heads=4, head_dim=256,
                       hidden_activation="gelu_pytorch_tanh", rms_norm_eps=1e-6, tie_word_embeddings=True,
                       rope_theta=10000.0, attention_bias=False, query_pre_attn_scalar=256, sliding_window=4096,
                       final_logit_softcapping=30.0, attn_logit_softcapping=50.0)
GEMMA3_DEFAULTS = dict(GEMMA2_DEFAULTS, vocab_size=262208, rope_theta=1_000_000.0, final_logit_softcapping=None,
                       attn_logit_softcapping=None, rope_scaling=None, rope_local_base_freq=10_000.0,
                       sliding_window_pattern=6)


class GemmaRMSNorm(nn.Module):
    def __init__(self, weight, eps):
        super().__init__()
        self.weight = weight
        self.eps = eps

    def _norm(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)

    def forward(self, x):
        output = self._norm(x.float())
        # Llama does x.to(float16) * w whilst Gemma is (x * w).to(float16) (modeling_gemma2.py's comment)
        output = output * (1.0 + self.weight.float())
        return output.type_as(x)


def eager_attention_forward(query, key, value, attention_mask, scaling, n_rep, softcap=None):
    key_states = repeat_kv(key, n_rep)
    value_states = repeat_kv(value, n_rep)
    attn_weights = torch.matmul(query, key_states.transpose(2, 3)) * scaling
    if softcap is not None:
        attn_weights = attn_weights / softcap
        attn_weights = torch.tanh(attn_weights)
        attn_weights = attn_weights * softcap
    attn_weights = attn_weights + attention_mask[:, :, :, : key_states.shape[-2]]
    attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_output = torch.matmul(attn_weights, value_states)
    return attn_output.transpose(1, 2).contiguous()


class GemmaAttention(nn.Module):
    def __init__(self, config, w, p, qk_norm):
        super().__init__()
        self.head_dim = config["head_dim"]
        self.num_key_value_groups = config["num_attention_heads"] // config["num_key_value_heads"]
        self.scaling = config["query_pre_attn_scalar"] ** -0.5
        self.attn_logit_softcapping = config["attn_logit_softcapping"]
        bias = config["attention_bias"]
        self.w = {n: (w[p + n + ".weight"], w[p + n + ".bias"] if bias else None)
                  for n in ("q_proj", "k_proj", "v_proj", "o_proj")}
        eps = config["rms_norm_eps"]
        self.q_norm = GemmaRMSNorm(w[p + "q_norm.weight"], eps) if qk_norm else None
        self.k_norm = GemmaRMSNorm(w[p + "k_norm.weight"], eps) if qk_norm else None

    def forward(self, hidden_states, position_embeddings, attention_mask, cache, taps):
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        query_states = linear(hidden_states, *self.w["q_proj"]).view(hidden_shape).transpose(1, 2)
        key_states = linear(hidden_states, *self.w["k_proj"]).view(hidden_shape).transpose(1, 2)
        value_states = linear(hidden_states, *self.w["v_proj"]).view(hidden_shape).transpose(1, 2)
        if self.q_norm is not None:  # Gemma3Attention: after the transpose, over head_dim
            query_states = self.q_norm(query_states)
            key_states = self.k_norm(key_states)
        taps.append((key_states[0].transpose(0, 1), value_states[0].transpose(0, 1)))  # [S, H_kv, D], pre-RoPE
        cos, sin = position_embeddings
        query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin)
        if cache is not None:  # DynamicCache.update: append along the sequence axis
            if cache:
                key_states = torch.cat([cache[0], key_states], dim=-2)
                value_states = torch.cat([cache[1], value_states], dim=-2)
            cache[:] = [key_states, value_states]
        attn_output = eager_attention_forward(query_states, key_states, value_states, attention_mask, self.scaling,
                                              self.num_key_value_groups, self.attn_logit_softcapping)
        attn_output = attn_output.reshape(*input_shape, -1).contiguous()
        return linear(attn_output, *self.w["o_proj"])


class GemmaDecoderLayer(nn.Module):
    def __init__(self, config, w, l, qk_norm, act):
        super().__init__()
        p = f"model.layers.{l}."
        eps = config["rms_norm_eps"]
        self.self_attn = GemmaAttention(config, w, p + "self_attn.", qk_norm)
        self.mlp = GemmaMLP(w, p + "mlp.", act)
        self.input_layernorm = GemmaRMSNorm(w[p + "input_layernorm.weight"], eps)
        self.post_attention_layernorm = GemmaRMSNorm(w[p + "post_attention_layernorm.weight"], eps)
        self.pre_feedforward_layernorm = GemmaRMSNorm(w[p + "pre_feedforward_layernorm.weight"], eps)
        self.post_feedforward_layernorm = GemmaRMSNorm(w[p + "post_feedforward_layernorm.weight"], eps)

    def forward(self, hidden_states, attention_mask, position_embeddings, cache, taps):
        residual = hidden_states
        hidden_states = self.input_layernorm(hidden_states)
        hidden_states = self.self_attn(hidden_states, position_embeddings, attention_mask, cache, taps)
        hidden_states = self.post_attention_layernorm(hidden_states)
        hidden_states = residual + hidden_states
        residual = hidden_states
        hidden_states = self.pre_feedforward_layernorm(hidden_states)
        hidden_states = self.mlp(hidden_states)
        hidden_states = self.post_feedforward_layernorm(hidden_states)
        return residual + hidden_states


def rotary(inv):  # Gemma2RotaryEmbedding.forward / Gemma3RotaryEmbedding.forward, fp32 (attention_scaling 1)
    def forward(position_ids):
        freqs = (inv[None, :, None].float() @ position_ids[:, None, :].float()).transpose(1, 2)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos(), emb.sin()
    return forward


class GemmaForCausalLM(nn.Module):
    def __init__(self, config, w):
        super().__init__()
        kind = config["model_type"]
        if kind == "gemma3":  # Gemma3ForConditionalGeneration: its text model only
            config = dict(config["text_config"], model_type="gemma3_text")
            kind = "gemma3_text"
        assert kind in ("gemma2", "gemma3_text"), kind
        gemma3 = kind == "gemma3_text"
        for key, value in (GEMMA3_DEFAULTS if gemma3 else GEMMA2_DEFAULTS).items():
            config.setdefault(key, value)
        L = config["num_hidden_layers"]
        # layer_types, else Gemma2's rule ((i + 1) % 2: the even layers slide) or Gemma-3's
        # ((i + 1) % sliding_window_pattern: every 6th layer global).
        pattern = config["sliding_window_pattern"] if gemma3 else 2
        types = config.get("layer_types") or [
            "sliding_attention" if bool((i + 1) % pattern) else "full_attention" for i in range(L)]
        self.layer_windows = [config["sliding_window"] if t == "sliding_attention" else None for t in types]
        self.embed_tokens = w["model.embed_tokens.weight"]
        act = ACT2FN[config["hidden_activation"]]
        self.layers = [GemmaDecoderLayer(config, w, l, gemma3, act) for l in range(L)]
        self.norm = GemmaRMSNorm(w["model.norm.weight"], config["rms_norm_eps"])
        self.lm_head = w["model.embed_tokens.weight"] if config["tie_word_embeddings"] else w["lm_head.weight"]
        self.embed_scale = config["hidden_size"] ** 0.5
        self.final_logit_softcapping = config["final_logit_softcapping"]
        head_dim = config["head_dim"]
        if gemma3:
            scaling = config.get("rope_scaling") or {}
            if scaling.get("rope_type", scaling.get("type", "default")) not in ("default", "linear"):
                raise SystemExit(f"reference_gemma.py: rope_scaling {scaling} is not modelled")
            self.rotary_emb = rotary(inv_freq({"rope_theta": config["rope_theta"], "rope_scaling": scaling}, head_dim))
            # Gemma3TextModel.rotary_emb_local: rope_theta = rope_local_base_freq, rope_scaling default
            self.rotary_emb_local = rotary(inv_freq({"rope_theta": config["rope_local_base_freq"]}, head_dim))
        else:
            self.rotary_emb = rotary(inv_freq(config, head_dim))
            self.rotary_emb_local = None

    def forward(self, input_ids, caches, past, taps):
        return reference_qwen3.decoder_forward(self, input_ids, caches, past, taps, layer_windows=self.layer_windows,
                                               embed_scale=self.embed_scale, local_rotary_emb=self.rotary_emb_local,
                                               final_softcap=self.final_logit_softcapping)


if __name__ == "__main__":
    reference_qwen3.main(GemmaForCausalLM)
