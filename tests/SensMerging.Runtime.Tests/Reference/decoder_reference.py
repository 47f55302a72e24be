"""Independent float64 reference for the runtime's decoder architectures (run by /usr/bin/python3, Debian's
python3-torch). Written from the published Hugging Face definitions (modeling_llama/mistral/qwen2/qwen3/gemma2/phi3,
modeling_rope_utils) with plain tensor operations; it shares no code with the C# runtime.

  make CONFIG_JSON OUT_DIR SEED DTYPE   random weights with the architecture's Hugging Face tensor names, written as
                                        OUT_DIR/model.safetensors in DTYPE (F32 or BF16); CONFIG_JSON copied to
                                        OUT_DIR/config.json
  run MODEL_DIR INPUT_JSON              INPUT_JSON: {"samples": [{"ids": [...], "mask": [...]}, ...]}; prints JSON
                                        {"logits": [per sample, T x V row-major], "losses": [...],
                                         "scores": {layer group: mean over samples of sum |theta * dL/dtheta|}}
"""
import json
import math
import os
import re
import shutil
import struct
import sys

import torch

DT = torch.float64


# ---------------------------------------------------------------- safetensors (by hand: no safetensors package)

def write_safetensors(path, tensors, dtype_name):
    header = {}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name]
        if dtype_name == "BF16":
            raw = t.to(torch.bfloat16).contiguous().view(torch.int16).numpy().tobytes()
        else:
            raw = t.to(torch.float32).contiguous().numpy().tobytes()
        header[name] = {"dtype": dtype_name, "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        raw = bytearray(data[8 + n + begin:8 + n + end])
        if info["dtype"] == "BF16":
            t = torch.frombuffer(raw, dtype=torch.int16).view(torch.bfloat16)
        elif info["dtype"] == "F32":
            t = torch.frombuffer(raw, dtype=torch.float32)
        else:
            raise SystemExit(f"unexpected dtype {info['dtype']}")
        out[name] = t.reshape(info["shape"]).to(DT).clone()
    return out


# ---------------------------------------------------------------- the published architectures

class Arch:
    """The settings of one config.json, with each model type's published defaults."""

    def __init__(self, c):
        self.c = c
        t = self.type = c["model_type"]
        self.hidden = c["hidden_size"]
        self.inter = c["intermediate_size"]
        self.layers = c["num_hidden_layers"]
        self.heads = c["num_attention_heads"]
        self.kv = c.get("num_key_value_heads") or self.heads
        default_head_dim = {"qwen3": 128, "gemma2": 256}.get(t)
        self.head_dim = c.get("head_dim") or default_head_dim or self.hidden // self.heads
        self.vocab = c["vocab_size"]
        self.eps = c.get("rms_norm_eps", 1e-6)
        self.theta = c.get("rope_theta", 10000.0)
        self.tied = c.get("tie_word_embeddings", t == "gemma2")
        self.gemma = t == "gemma2"
        self.fused = t == "phi3"
        self.qk_norm = t == "qwen3"
        # Which projections carry a bias.
        if t == "qwen2":
            self.qkv_bias, self.o_bias = True, False
        elif t == "phi3":
            self.qkv_bias = self.o_bias = False
        else:
            self.qkv_bias = self.o_bias = bool(c.get("attention_bias", False))
        # Attention window per layer.
        window = c.get("sliding_window")
        if t in ("qwen2", "qwen3"):
            window = window if c.get("use_sliding_window", False) else None
            types = c.get("layer_types") or [
                "sliding_attention" if window is not None and i >= c.get("max_window_layers", 28) else "full_attention"
                for i in range(self.layers)]
        elif t == "gemma2":
            window = c.get("sliding_window", 4096)
            types = c.get("layer_types") or [
                "sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(self.layers)]
        else:
            types = ["sliding_attention" if window is not None else "full_attention"] * self.layers
        self.windows = [window if k == "sliding_attention" else None for k in types]
        if self.gemma:
            self.scale = c.get("query_pre_attn_scalar", 256) ** -0.5
            self.attn_cap = c.get("attn_logit_softcapping", 50.0)
            self.final_cap = c.get("final_logit_softcapping", 30.0)
        else:
            self.scale = self.head_dim ** -0.5
            self.attn_cap = self.final_cap = None

    def tensor_shapes(self):
        h, d, i = self.hidden, self.head_dim, self.inter
        shapes = {"model.embed_tokens.weight": [self.vocab, h], "model.norm.weight": [h]}
        if not self.tied:
            shapes["lm_head.weight"] = [self.vocab, h]
        for l in range(self.layers):
            p = f"model.layers.{l}."
            shapes[p + "input_layernorm.weight"] = [h]
            shapes[p + "post_attention_layernorm.weight"] = [h]
            if self.gemma:
                shapes[p + "pre_feedforward_layernorm.weight"] = [h]
                shapes[p + "post_feedforward_layernorm.weight"] = [h]
            if self.fused:
                shapes[p + "self_attn.qkv_proj.weight"] = [(self.heads + 2 * self.kv) * d, h]
                shapes[p + "mlp.gate_up_proj.weight"] = [2 * i, h]
            else:
                for name, rows in (("q", self.heads * d), ("k", self.kv * d), ("v", self.kv * d)):
                    shapes[p + f"self_attn.{name}_proj.weight"] = [rows, h]
                    if self.qkv_bias:
                        shapes[p + f"self_attn.{name}_proj.bias"] = [rows]
                shapes[p + "mlp.gate_proj.weight"] = [i, h]
                shapes[p + "mlp.up_proj.weight"] = [i, h]
            shapes[p + "self_attn.o_proj.weight"] = [h, self.heads * d]
            if self.o_bias:
                shapes[p + "self_attn.o_proj.bias"] = [h]
            if self.qk_norm:
                shapes[p + "self_attn.q_norm.weight"] = [d]
                shapes[p + "self_attn.k_norm.weight"] = [d]
            shapes[p + "mlp.down_proj.weight"] = [h, i]
        return shapes

    def inv_freq(self):
        d = self.head_dim
        inv = 1.0 / (self.theta ** (torch.arange(0, d, 2, dtype=DT) / d))
        rs = self.c.get("rope_scaling")
        kind = None if rs is None else rs.get("rope_type", rs.get("type"))
        if kind in (None, "default"):
            return inv
        if kind == "linear":
            return inv / rs["factor"]
        if kind == "llama3":
            factor, low, high = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
            old = rs["original_max_position_embeddings"]
            wavelen = 2 * math.pi / inv
            out = torch.where(wavelen > old / low, inv / factor, inv)
            smooth = (old / wavelen - low) / (high - low)
            medium = (wavelen >= old / high) & (wavelen <= old / low)
            return torch.where(medium, (1 - smooth) * inv / factor + smooth * inv, out)
        raise SystemExit(f"reference: rope_scaling {kind} not implemented")


def rms(x, w, eps, offset):
    n = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return n * (1.0 + w) if offset else n * w


def linear(W, x, name):
    y = x @ W[name + ".weight"].T
    if name + ".bias" in W:
        y = y + W[name + ".bias"]
    return y


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], -1)


def gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def forward(a, W, ids):
    T = len(ids)
    h, d, nh, nkv = a.hidden, a.head_dim, a.heads, a.kv
    x = W["model.embed_tokens.weight"][torch.tensor(ids)]
    if a.gemma:
        x = x * math.sqrt(h)
    angles = torch.outer(torch.arange(T, dtype=DT), a.inv_freq())
    angles = torch.cat([angles, angles], -1)
    cos, sin = angles.cos(), angles.sin()
    i_idx = torch.arange(T).unsqueeze(1)
    j_idx = torch.arange(T).unsqueeze(0)
    for l in range(a.layers):
        p = f"model.layers.{l}."
        y = rms(x, W[p + "input_layernorm.weight"], a.eps, a.gemma)
        if a.fused:
            qkv = linear(W, y, p + "self_attn.qkv_proj")
            q, k, v = qkv[:, :nh * d], qkv[:, nh * d:(nh + nkv) * d], qkv[:, (nh + nkv) * d:]
        else:
            q = linear(W, y, p + "self_attn.q_proj")
            k = linear(W, y, p + "self_attn.k_proj")
            v = linear(W, y, p + "self_attn.v_proj")
        q = q.reshape(T, nh, d)
        k = k.reshape(T, nkv, d)
        v = v.reshape(T, nkv, d)
        if a.qk_norm:
            q = rms(q, W[p + "self_attn.q_norm.weight"], a.eps, False)
            k = rms(k, W[p + "self_attn.k_norm.weight"], a.eps, False)
        q, k, v = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)  # heads, T, d
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(nh // nkv, dim=0)
        v = v.repeat_interleave(nh // nkv, dim=0)
        s = (q @ k.transpose(1, 2)) * a.scale
        if a.attn_cap is not None:
            s = torch.tanh(s / a.attn_cap) * a.attn_cap
        allowed = j_idx <= i_idx
        if a.windows[l] is not None:
            allowed = allowed & (i_idx - j_idx < a.windows[l])
        s = s.masked_fill(~allowed, float("-inf"))
        o = (torch.softmax(s, -1) @ v).transpose(0, 1).reshape(T, nh * d)
        o = linear(W, o, p + "self_attn.o_proj")
        if a.gemma:
            x = x + rms(o, W[p + "post_attention_layernorm.weight"], a.eps, True)
            y = rms(x, W[p + "pre_feedforward_layernorm.weight"], a.eps, True)
        else:
            x = x + o
            y = rms(x, W[p + "post_attention_layernorm.weight"], a.eps, False)
        if a.fused:
            gu = linear(W, y, p + "mlp.gate_up_proj")
            gate, up = gu[:, :a.inter], gu[:, a.inter:]
        else:
            gate, up = linear(W, y, p + "mlp.gate_proj"), linear(W, y, p + "mlp.up_proj")
        act = gelu_tanh(gate) if a.gemma else gate * torch.sigmoid(gate)
        m = linear(W, act * up, p + "mlp.down_proj")
        if a.gemma:
            m = rms(m, W[p + "post_feedforward_layernorm.weight"], a.eps, True)
        x = x + m
    x = rms(x, W["model.norm.weight"], a.eps, a.gemma)
    head = W["model.embed_tokens.weight"] if a.tied else W["lm_head.weight"]
    logits = x @ head.T
    if a.final_cap is not None:
        logits = torch.tanh(logits / a.final_cap) * a.final_cap
    return logits


def group_of(name):
    m = re.match(r"model\.layers\.(\d+)\.", name)
    if m:
        return f"model.layers.{m.group(1)}"
    for g in ("model.embed_tokens", "model.norm", "lm_head"):
        if name.startswith(g):
            return g
    raise SystemExit(f"no group for {name}")


def make(config_path, out_dir, seed, dtype_name):
    with open(config_path) as f:
        c = json.load(f)
    a = Arch(c)
    os.makedirs(out_dir, exist_ok=True)
    shutil.copyfile(config_path, os.path.join(out_dir, "config.json"))
    g = torch.Generator().manual_seed(int(seed))
    tensors = {}
    for name, shape in a.tensor_shapes().items():
        noise = torch.rand(shape, generator=g, dtype=DT) * 2 - 1
        if name.endswith("norm.weight"):
            base = 0.0 if a.gemma else 1.0
            tensors[name] = base + 0.2 * noise
        elif name.endswith("embed_tokens.weight"):
            tensors[name] = 0.9 * noise
        else:
            tensors[name] = 0.3 * noise
    write_safetensors(os.path.join(out_dir, "model.safetensors"), tensors, dtype_name)


def run(model_dir, input_path):
    with open(os.path.join(model_dir, "config.json")) as f:
        a = Arch(json.load(f))
    W = read_safetensors(os.path.join(model_dir, "model.safetensors"))
    expected = a.tensor_shapes()
    if set(W) != set(expected):
        raise SystemExit(f"tensor names differ: {sorted(set(W) ^ set(expected))}")
    for t in W.values():
        t.requires_grad_(True)
    with open(input_path) as f:
        samples = json.load(f)["samples"]
    sums = {}
    logits_out, losses = [], []
    for s in samples:
        ids, mask = s["ids"], s["mask"]
        for t in W.values():
            t.grad = None
        logits = forward(a, W, ids)
        positions = [t for t in range(len(ids) - 1) if mask[t]]
        targets = torch.tensor([ids[t + 1] for t in positions])
        loss = torch.nn.functional.cross_entropy(logits[positions], targets)
        loss.backward()
        for name, t in W.items():
            g = group_of(name)
            sums[g] = sums.get(g, 0.0) + (t.detach() * t.grad).abs().sum().item()
        logits_out.append(logits.detach().reshape(-1).tolist())
        losses.append(loss.item())
    scores = {g: v / len(samples) for g, v in sums.items()}
    json.dump({"logits": logits_out, "losses": losses, "scores": scores}, sys.stdout)


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "make":
        make(*sys.argv[2:])
    elif len(sys.argv) == 4 and sys.argv[1] == "run":
        run(*sys.argv[2:])
    else:
        raise SystemExit(__doc__)
