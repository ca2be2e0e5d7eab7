#!/usr/bin/env python3
"""An independent reference for selfsteer's Llama engine, in plain numpy (float64).

It shares no code with the TypeScript engine: its own safetensors writer and reader (struct + json),
its own forward pass written from the Hugging Face LlamaForCausalLM semantics (RMSNorm, rotate-half
RoPE, grouped-query causal attention scaled by 1/sqrt(head_dim), SiLU-gated MLP, final norm, lm_head
or tied embeddings). test/reference.test.ts drives it.

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
}

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


def random_weights(cfg, rng):
    """Weights scaled so activations and logits are O(1): a forward bug cannot hide in a flat softmax."""
    h, i, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    nh, nkv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], head_dim_of(cfg)

    def mat(rows, cols):
        return (rng.standard_normal((rows, cols)) / math.sqrt(cols)).astype(np.float32)

    def norm(n):
        return (1.0 + 0.2 * rng.standard_normal(n)).astype(np.float32)

    w = {"model.embed_tokens.weight": rng.standard_normal((v, h)).astype(np.float32)}
    for layer in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        w[p + "input_layernorm.weight"] = norm(h)
        w[p + "self_attn.q_proj.weight"] = mat(nh * hd, h)
        w[p + "self_attn.k_proj.weight"] = mat(nkv * hd, h)
        w[p + "self_attn.v_proj.weight"] = mat(nkv * hd, h)
        w[p + "self_attn.o_proj.weight"] = mat(h, nh * hd)
        w[p + "post_attention_layernorm.weight"] = norm(h)
        w[p + "mlp.gate_proj.weight"] = mat(i, h)
        w[p + "mlp.up_proj.weight"] = mat(i, h)
        w[p + "mlp.down_proj.weight"] = mat(h, i)
    w["model.norm.weight"] = norm(h)
    if not cfg["tie_word_embeddings"]:
        w["lm_head.weight"] = mat(v, h)
    return w


def rms_norm(x, weight, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def rope(x, positions, theta):
    """x: [heads, T, hd]. Rotate-half convention: pairs are (j, j + hd/2)."""
    hd = x.shape[-1]
    inv_freq = 1.0 / (theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd))
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
    eps, theta = cfg["rms_norm_eps"], cfg["rope_theta"]
    x = w["model.embed_tokens.weight"][ids]            # [T, H]
    positions = np.arange(T, dtype=np.float64)
    causal = np.triu(np.full((T, T), -np.inf), 1)
    for layer in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        h = rms_norm(x, w[p + "input_layernorm.weight"], eps)
        q = (h @ w[p + "self_attn.q_proj.weight"].T).reshape(T, nh, hd).transpose(1, 0, 2)
        k = (h @ w[p + "self_attn.k_proj.weight"].T).reshape(T, nkv, hd).transpose(1, 0, 2)
        v = (h @ w[p + "self_attn.v_proj.weight"].T).reshape(T, nkv, hd).transpose(1, 0, 2)
        q, k = rope(q, positions, theta), rope(k, positions, theta)
        group = nh // nkv
        heads = []
        for head in range(nh):
            kv = head // group
            scores = q[head] @ k[kv].T / math.sqrt(hd) + causal
            scores -= scores.max(-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(-1, keepdims=True)
            heads.append(probs @ v[kv])
        attn = np.stack(heads, 1).reshape(T, nh * hd)
        x = x + attn @ w[p + "self_attn.o_proj.weight"].T
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        gate = h @ w[p + "mlp.gate_proj.weight"].T
        up = h @ w[p + "mlp.up_proj.weight"].T
        x = x + (gate / (1.0 + np.exp(-gate)) * up) @ w[p + "mlp.down_proj.weight"].T
    x = rms_norm(x, w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings") else w["lm_head.weight"]
    logits = x @ head.T
    m = logits.max(-1, keepdims=True)
    log_z = m[:, 0] + np.log(np.exp(logits - m).sum(-1))
    return [float(logits[t, ids[t + 1]] - log_z[t]) for t in range(T - 1)]


def full_config(cfg):
    out = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
           "max_position_embeddings": 256, "torch_dtype": "float32", "attention_bias": False}
    out.update(cfg)
    out.setdefault("num_key_value_heads", out["num_attention_heads"])
    return out


def load_config(path):
    with open(path) as f:
        cfg = json.load(f)
    cfg.setdefault("num_key_value_heads", cfg["num_attention_heads"])
    cfg.setdefault("rms_norm_eps", 1e-6)
    cfg.setdefault("rope_theta", 10000.0)
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
