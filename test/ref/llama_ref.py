#!/usr/bin/env python3
"""An independent reference for selfsteer's engine, in plain numpy (float64).

It shares no code with the TypeScript engine: its own safetensors writer and reader (struct + json),
its own forward pass written from the Hugging Face semantics of LlamaForCausalLM (RMSNorm, rotate-half
RoPE, grouped-query causal attention scaled by 1/sqrt(head_dim), SiLU-gated MLP, final norm, lm_head
or tied embeddings) and of the families built on it: Llama's optional attention/MLP biases and
linear / llama3 RoPE scaling, Qwen2's q/k/v biases, Mistral's sliding-window attention and Qwen3's
per-head q/k RMSNorm before RoPE. test/reference.test.ts drives it.

  llama_ref.py case --variant NAME --seed S --dtype F32|BF16|F16 --out DIR
      writes DIR/config.json, DIR/model.safetensors, DIR/ids.json ({"sequences": ...}),
      DIR/expected.json ({"logprobs": ...}, computed from the weights as stored) and
      DIR/probe.json (the first values of every tensor as stored, decoded to float).
  llama_ref.py logprobs --model DIR --ids F.json
      prints {"logprobs": [[...], ...]} for a checkpoint written by anyone.
"""

import argparse
import json
import math
import os
import struct
import sys

import numpy as np

VARIANTS = {
    # Grouped-query attention (2 query heads per key/value head), separate lm_head.
    "gqa": dict(vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
                rope_theta=10000.0, tie_word_embeddings=False),
    # Tied embeddings, plain multi-head attention, a Llama-3-style rope_theta and eps.
    "tied": dict(vocab_size=40, hidden_size=24, intermediate_size=40, num_hidden_layers=2,
                 num_attention_heads=3, num_key_value_heads=3, rms_norm_eps=1e-6,
                 rope_theta=500000.0, tie_word_embeddings=True),
    # Multi-query attention with an explicit head_dim that is not hidden/heads.
    "mqa": dict(vocab_size=30, hidden_size=16, intermediate_size=24, num_hidden_layers=3,
                num_attention_heads=4, num_key_value_heads=1, head_dim=6, rms_norm_eps=1e-5,
                rope_theta=10000.0, tie_word_embeddings=False),
    # Llama 3.1-style RoPE scaling with all three frequency bands present (kept, blended, divided),
    # an explicit head_dim, and biases on every attention and MLP projection.
    "llama3": dict(model_type="llama", vocab_size=45, hidden_size=24, intermediate_size=40,
                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                   rms_norm_eps=1e-5, rope_theta=1000.0, tie_word_embeddings=True,
                   attention_bias=True, mlp_bias=True,
                   rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                 "high_freq_factor": 4.0, "original_max_position_embeddings": 256}),
    # Linear RoPE scaling (positions divided by the factor), the old-style "type" key.
    "linear": dict(model_type="llama", vocab_size=33, hidden_size=16, intermediate_size=24,
                   num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                   rms_norm_eps=1e-6, rope_theta=100.0, tie_word_embeddings=False,
                   rope_scaling={"type": "linear", "factor": 4.0}),
    # Qwen2 / Qwen2.5: q/k/v biases, no o_proj bias, untied head.
    "qwen2": dict(model_type="qwen2", vocab_size=48, hidden_size=32, intermediate_size=40,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=False,
                  use_sliding_window=False, sliding_window=32768, max_window_layers=2),
    # Qwen2.5-0.5B-style: tied embeddings, few kv heads.
    "qwen2-tied": dict(model_type="qwen2", vocab_size=40, hidden_size=16, intermediate_size=32,
                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
                       rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True,
                       use_sliding_window=False),
    # Mistral: explicit head_dim and a sliding window shorter than the longer test sequences.
    "mistral": dict(model_type="mistral", vocab_size=36, hidden_size=24, intermediate_size=32,
                    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=10,
                    rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
                    sliding_window=5),
    # Qwen3: per-head q/k RMSNorm before RoPE, head_dim larger than hidden/heads, tied.
    "qwen3": dict(model_type="qwen3", vocab_size=42, hidden_size=16, intermediate_size=28,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                  rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True,
                  attention_bias=False, use_sliding_window=False),
}

# What each family's transformers config class defaults to, for configs written by others.
FAMILY_DEFAULTS = {
    "llama": dict(rms_norm_eps=1e-6, rope_theta=10000.0, attention_bias=False, mlp_bias=False),
    "qwen2": dict(rms_norm_eps=1e-6, rope_theta=10000.0),
    "mistral": dict(rms_norm_eps=1e-6, rope_theta=10000.0, sliding_window=4096),
    "qwen3": dict(rms_norm_eps=1e-6, rope_theta=10000.0, head_dim=128, attention_bias=False),
}

ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
                 "mistral": "MistralForCausalLM", "qwen3": "Qwen3ForCausalLM"}

DTYPE_SIZES = {"F32": 4, "BF16": 2, "F16": 2}


# ---------------------------------------------------------------- safetensors, by hand

def float32_to_bf16_bits(x):
    """Round-to-nearest-even fp32 -> bf16 bit patterns (what torch's .to(bfloat16) does)."""
    bits = np.ascontiguousarray(x, dtype="<f4").view("<u4").astype(np.uint64)
    rounding = ((bits >> 16) & 1) + 0x7FFF
    return ((bits + rounding) >> 16).astype("<u2")


def encode(array, dtype):
    if dtype == "F32":
        return np.ascontiguousarray(array, dtype="<f4").tobytes()
    if dtype == "F16":
        return np.ascontiguousarray(array, dtype="<f2").tobytes()
    if dtype == "BF16":
        return float32_to_bf16_bits(array).tobytes()
    raise ValueError(dtype)


def write_safetensors(path, tensors, dtype, align_header):
    """tensors: dict name -> float array. Names sorted (not our engine's order) on purpose."""
    header = {"__metadata__": {"format": "pt", "writer": "llama_ref.py"}}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        blob = encode(tensors[name], dtype)
        header[name] = {"dtype": dtype, "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header).encode("utf-8")
    if align_header:
        text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


def read_safetensors(path):
    """Returns dict name -> float64 array, widening BF16/F16."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    data = raw[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        chunk = data[start:end]
        dtype = info["dtype"]
        if dtype == "F32":
            arr = np.frombuffer(chunk, dtype="<f4")
        elif dtype == "F16":
            arr = np.frombuffer(chunk, dtype="<f2").astype(np.float32)
        elif dtype == "BF16":
            arr = (np.frombuffer(chunk, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            raise ValueError(f"{path}: {name}: dtype {dtype}")
        assert arr.size * DTYPE_SIZES[dtype] == end - start
        out[name] = arr.astype(np.float64).reshape(info["shape"])
    return out


# ---------------------------------------------------------------- the model

def head_dim_of(cfg):
    return cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]


def family_of(cfg):
    return cfg.get("model_type", "llama")


def has_qkv_bias(cfg):
    return family_of(cfg) == "qwen2" or bool(cfg.get("attention_bias"))


def has_o_bias(cfg):
    return family_of(cfg) in ("llama", "qwen3") and bool(cfg.get("attention_bias"))


def has_mlp_bias(cfg):
    return family_of(cfg) == "llama" and bool(cfg.get("mlp_bias"))


def has_qk_norm(cfg):
    return family_of(cfg) == "qwen3"


def sliding_window_of(cfg):
    return cfg.get("sliding_window") if family_of(cfg) == "mistral" else None


def random_weights(cfg, rng):
    """Weights scaled so activations and logits are O(1): a forward bug cannot hide in a flat softmax."""
    h, i, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    nh, nkv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], head_dim_of(cfg)

    def mat(rows, cols):
        return (rng.standard_normal((rows, cols)) / math.sqrt(cols)).astype(np.float32)

    def norm(n):
        return (1.0 + 0.2 * rng.standard_normal(n)).astype(np.float32)

    def bias(n):
        return (0.3 * rng.standard_normal(n)).astype(np.float32)

    w = {"model.embed_tokens.weight": rng.standard_normal((v, h)).astype(np.float32)}
    for layer in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        w[p + "input_layernorm.weight"] = norm(h)
        w[p + "self_attn.q_proj.weight"] = mat(nh * hd, h)
        w[p + "self_attn.k_proj.weight"] = mat(nkv * hd, h)
        w[p + "self_attn.v_proj.weight"] = mat(nkv * hd, h)
        w[p + "self_attn.o_proj.weight"] = mat(h, nh * hd)
        if has_qkv_bias(cfg):
            w[p + "self_attn.q_proj.bias"] = bias(nh * hd)
            w[p + "self_attn.k_proj.bias"] = bias(nkv * hd)
            w[p + "self_attn.v_proj.bias"] = bias(nkv * hd)
        if has_o_bias(cfg):
            w[p + "self_attn.o_proj.bias"] = bias(h)
        if has_qk_norm(cfg):
            w[p + "self_attn.q_norm.weight"] = norm(hd)
            w[p + "self_attn.k_norm.weight"] = norm(hd)
        w[p + "post_attention_layernorm.weight"] = norm(h)
        w[p + "mlp.gate_proj.weight"] = mat(i, h)
        w[p + "mlp.up_proj.weight"] = mat(i, h)
        w[p + "mlp.down_proj.weight"] = mat(h, i)
        if has_mlp_bias(cfg):
            w[p + "mlp.gate_proj.bias"] = bias(i)
            w[p + "mlp.up_proj.bias"] = bias(i)
            w[p + "mlp.down_proj.bias"] = bias(h)
    w["model.norm.weight"] = norm(h)
    if not cfg["tie_word_embeddings"]:
        w["lm_head.weight"] = mat(v, h)
    return w


def rms_norm(x, weight, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def inverse_frequencies(cfg, hd):
    """RoPE inverse frequencies, after the config's rope_scaling (none, linear or llama3)."""
    inv_freq = 1.0 / (cfg["rope_theta"] ** (np.arange(0, hd, 2, dtype=np.float64) / hd))
    scaling = cfg.get("rope_scaling")
    if not scaling:
        return inv_freq
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "default":
        return inv_freq
    if kind == "linear":
        return inv_freq / scaling["factor"]
    if kind == "llama3":
        factor = scaling["factor"]
        low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
        context = scaling["original_max_position_embeddings"]
        out = []
        for f in inv_freq:
            wavelength = 2 * math.pi / f
            if wavelength < context / high:
                out.append(f)                      # high frequency: unchanged
            elif wavelength > context / low:
                out.append(f / factor)             # low frequency: interpolated
            else:
                blend = (context / wavelength - low) / (high - low)
                out.append((1 - blend) * f / factor + blend * f)
        return np.array(out)
    raise ValueError(f"rope_scaling type {kind}")


def rope(x, positions, inv_freq):
    """x: [heads, T, hd]. Rotate-half convention: pairs are (j, j + hd/2)."""
    hd = x.shape[-1]
    angles = np.outer(positions, inv_freq)            # [T, hd/2]
    cos = np.concatenate([np.cos(angles)] * 2, -1)     # [T, hd]
    sin = np.concatenate([np.sin(angles)] * 2, -1)
    first, second = x[..., : hd // 2], x[..., hd // 2:]
    rotated = np.concatenate([-second, first], -1)
    return x * cos + rotated * sin


def next_token_logprobs(cfg, w, ids):
    """log p(ids[t+1] | ids[..t]) for t in 0..len-2, by a full causal forward in float64."""
    ids = np.asarray(ids, dtype=np.int64)
    T = len(ids)
    if T < 2:
        return []
    nh, nkv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], head_dim_of(cfg)
    eps = cfg["rms_norm_eps"]
    inv_freq = inverse_frequencies(cfg, hd)
    x = w["model.embed_tokens.weight"][ids]            # [T, H]
    positions = np.arange(T, dtype=np.float64)
    mask = np.triu(np.full((T, T), -np.inf), 1)        # causal: key j <= query i
    window = sliding_window_of(cfg)
    if window:
        mask += np.tril(np.full((T, T), -np.inf), -window)  # and j > i - window

    def project(h, name):
        out = h @ w[name + ".weight"].T
        return out + w[name + ".bias"] if name + ".bias" in w else out

    for layer in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        h = rms_norm(x, w[p + "input_layernorm.weight"], eps)
        q = project(h, p + "self_attn.q_proj").reshape(T, nh, hd)
        k = project(h, p + "self_attn.k_proj").reshape(T, nkv, hd)
        v = project(h, p + "self_attn.v_proj").reshape(T, nkv, hd).transpose(1, 0, 2)
        if has_qk_norm(cfg):
            q = rms_norm(q, w[p + "self_attn.q_norm.weight"], eps)
            k = rms_norm(k, w[p + "self_attn.k_norm.weight"], eps)
        q = rope(q.transpose(1, 0, 2), positions, inv_freq)
        k = rope(k.transpose(1, 0, 2), positions, inv_freq)
        group = nh // nkv
        heads = []
        for head in range(nh):
            kv = head // group
            scores = q[head] @ k[kv].T / math.sqrt(hd) + mask
            scores -= scores.max(-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(-1, keepdims=True)
            heads.append(probs @ v[kv])
        attn = np.stack(heads, 1).reshape(T, nh * hd)
        x = x + project(attn, p + "self_attn.o_proj")
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        gate = project(h, p + "mlp.gate_proj")
        up = project(h, p + "mlp.up_proj")
        x = x + project(gate / (1.0 + np.exp(-gate)) * up, p + "mlp.down_proj")
    x = rms_norm(x, w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings") else w["lm_head.weight"]
    logits = x @ head.T
    m = logits.max(-1, keepdims=True)
    log_z = m[:, 0] + np.log(np.exp(logits - m).sum(-1))
    return [float(logits[t, ids[t + 1]] - log_z[t]) for t in range(T - 1)]


def full_config(cfg):
    family = cfg.get("model_type", "llama")
    out = {"architectures": [ARCHITECTURES[family]], "model_type": family, "hidden_act": "silu",
           "max_position_embeddings": 256, "torch_dtype": "float32"}
    if family == "llama":
        out["attention_bias"] = False
    out.update(cfg)
    out.setdefault("num_key_value_heads", out["num_attention_heads"])
    return out


def load_config(path):
    with open(path) as f:
        cfg = json.load(f)
    for key, value in FAMILY_DEFAULTS[family_of(cfg)].items():
        cfg.setdefault(key, value)
    cfg.setdefault("num_key_value_heads", cfg["num_attention_heads"])
    cfg.setdefault("tie_word_embeddings", False)
    return cfg


# ---------------------------------------------------------------- commands

def cmd_case(args):
    cfg = full_config(VARIANTS[args.variant])
    rng = np.random.default_rng(args.seed)
    weights = random_weights(cfg, rng)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    model_path = os.path.join(args.out, "model.safetensors")
    # F32 files get no header padding, so the reader meets unaligned tensor data too.
    write_safetensors(model_path, weights, args.dtype, align_header=args.dtype != "F32")
    stored = read_safetensors(model_path)
    vocab = cfg["vocab_size"]
    lengths = [1, 2, 5, 9, 17, 24]
    sequences = [[int(t) for t in rng.integers(0, vocab, n)] for n in lengths]
    sequences[2][1] = vocab - 1
    sequences[3][0] = 0
    with open(os.path.join(args.out, "ids.json"), "w") as f:
        json.dump({"sequences": sequences}, f)
    expected = [next_token_logprobs(cfg, stored, s) for s in sequences]
    with open(os.path.join(args.out, "expected.json"), "w") as f:
        json.dump({"logprobs": expected}, f)
    probe = {name: [float(x) for x in arr.reshape(-1)[:16]] for name, arr in stored.items()}
    with open(os.path.join(args.out, "probe.json"), "w") as f:
        json.dump(probe, f)


def cmd_logprobs(args):
    cfg = load_config(os.path.join(args.model, "config.json"))
    weights = read_safetensors(os.path.join(args.model, "model.safetensors"))
    with open(args.ids) as f:
        sequences = json.load(f)["sequences"]
    json.dump({"logprobs": [next_token_logprobs(cfg, weights, s) for s in sequences]}, sys.stdout)
    sys.stdout.write("\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    case = sub.add_parser("case")
    case.add_argument("--variant", choices=sorted(VARIANTS), required=True)
    case.add_argument("--seed", type=int, default=0)
    case.add_argument("--dtype", choices=sorted(DTYPE_SIZES), default="F32")
    case.add_argument("--out", required=True)
    case.set_defaults(run=cmd_case)
    lp = sub.add_parser("logprobs")
    lp.add_argument("--model", required=True)
    lp.add_argument("--ids", required=True)
    lp.set_defaults(run=cmd_logprobs)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
