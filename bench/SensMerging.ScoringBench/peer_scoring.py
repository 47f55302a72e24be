"""The PyTorch peer of the scoring benchmark (run by /usr/bin/python3, Debian's python3-torch).

  make DIR LAYERS HIDDEN HEADS KV INTER VOCAB SEED   a random Qwen2-architecture model (config.json, BF16
                                                     model.safetensors, tied head), written tensor by tensor
  score DIR SAMPLES_JSON THREADS                     sensitivity the straightforward way: the model as fp32 torch
                                                     parameters, per sample loss.backward() (every gradient held),
                                                     then per layer group sum |theta * grad|, mean over samples;
                                                     prints JSON {seconds, peak_rss_bytes, load_seconds, scores}

The architecture is Qwen2 as published (q/k/v bias, RMSNorm, rotary embeddings, SwiGLU, grouped-query attention);
scores are the same statistic the project's sensitivity scorer computes.
"""
import json
import math
import os
import re
import resource
import struct
import sys
import time

import torch
import torch.nn.functional as F


def names_and_shapes(c):
    h, i, d = c["hidden_size"], c["intermediate_size"], c["hidden_size"] // c["num_attention_heads"]
    nh, kv = c["num_attention_heads"], c["num_key_value_heads"]
    out = [("model.embed_tokens.weight", [c["vocab_size"], h])]
    for l in range(c["num_hidden_layers"]):
        p = f"model.layers.{l}."
        out += [(p + "input_layernorm.weight", [h]),
                (p + "self_attn.q_proj.weight", [nh * d, h]), (p + "self_attn.q_proj.bias", [nh * d]),
                (p + "self_attn.k_proj.weight", [kv * d, h]), (p + "self_attn.k_proj.bias", [kv * d]),
                (p + "self_attn.v_proj.weight", [kv * d, h]), (p + "self_attn.v_proj.bias", [kv * d]),
                (p + "self_attn.o_proj.weight", [h, nh * d]),
                (p + "post_attention_layernorm.weight", [h]),
                (p + "mlp.gate_proj.weight", [i, h]), (p + "mlp.up_proj.weight", [i, h]),
                (p + "mlp.down_proj.weight", [h, i])]
    out.append(("model.norm.weight", [h]))
    return out


def make(folder, layers, hidden, heads, kv, inter, vocab, seed):
    os.makedirs(folder, exist_ok=True)
    c = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": int(hidden),
         "intermediate_size": int(inter), "num_hidden_layers": int(layers), "num_attention_heads": int(heads),
         "num_key_value_heads": int(kv), "hidden_act": "silu", "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
         "max_position_embeddings": 32768, "max_window_layers": 21, "sliding_window": 32768,
         "use_sliding_window": False, "tie_word_embeddings": True, "vocab_size": int(vocab),
         "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "bfloat16"}
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(c, f, indent=1)
    entries = names_and_shapes(c)
    header, offset = {}, 0
    for name, shape in entries:
        size = 2 * math.prod(shape)
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    g = torch.Generator().manual_seed(int(seed))
    with open(os.path.join(folder, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for name, shape in entries:
            if name.endswith("norm.weight"):
                t = 1.0 + 0.1 * (torch.rand(shape, generator=g) * 2 - 1)
            elif name.endswith(".bias"):
                t = 0.02 * torch.randn(shape, generator=g)
            else:
                t = 0.02 * torch.randn(shape, generator=g)
            f.write(t.to(torch.bfloat16).view(torch.int16).numpy().tobytes())


def load(folder):
    with open(os.path.join(folder, "config.json")) as f:
        c = json.load(f)
    W = {}
    with open(os.path.join(folder, "model.safetensors"), "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        for name, info in header.items():
            if name == "__metadata__":
                continue
            begin, end = info["data_offsets"]
            f.seek(8 + n + begin)
            raw = bytearray(f.read(end - begin))
            t = torch.frombuffer(raw, dtype=torch.int16).view(torch.bfloat16).reshape(info["shape"])
            W[name] = t.to(torch.float32).requires_grad_(True)
            del raw, t
    return c, W


def rms(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], -1)


def loss_of(c, W, ids, positions, targets):
    T = ids.shape[0]
    h, nh, kv = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
    d = h // nh
    eps = c["rms_norm_eps"]
    inv = 1.0 / (c["rope_theta"] ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    angles = torch.outer(torch.arange(T, dtype=torch.float64), inv)
    angles = torch.cat([angles, angles], -1)
    cos, sin = angles.cos().float(), angles.sin().float()
    x = F.embedding(ids, W["model.embed_tokens.weight"])
    for l in range(c["num_hidden_layers"]):
        p = f"model.layers.{l}."
        y = rms(x, W[p + "input_layernorm.weight"], eps)
        q = F.linear(y, W[p + "self_attn.q_proj.weight"], W[p + "self_attn.q_proj.bias"]).view(T, nh, d).transpose(0, 1)
        k = F.linear(y, W[p + "self_attn.k_proj.weight"], W[p + "self_attn.k_proj.bias"]).view(T, kv, d).transpose(0, 1)
        v = F.linear(y, W[p + "self_attn.v_proj.weight"], W[p + "self_attn.v_proj.bias"]).view(T, kv, d).transpose(0, 1)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(nh // kv, 0)
        v = v.repeat_interleave(nh // kv, 0)
        s = (q @ k.transpose(1, 2)) / math.sqrt(d)
        s = s.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
        o = torch.softmax(s, -1) @ v
        x = x + F.linear(o.transpose(0, 1).reshape(T, nh * d), W[p + "self_attn.o_proj.weight"])
        y = rms(x, W[p + "post_attention_layernorm.weight"], eps)
        x = x + F.linear(F.silu(F.linear(y, W[p + "mlp.gate_proj.weight"])) * F.linear(y, W[p + "mlp.up_proj.weight"]),
                         W[p + "mlp.down_proj.weight"])
    x = rms(x, W["model.norm.weight"], eps)
    logits = F.linear(x[positions], W["model.embed_tokens.weight"])
    return F.cross_entropy(logits, targets)


def group_of(name):
    m = re.match(r"model\.layers\.(\d+)\.", name)
    return f"model.layers.{m.group(1)}" if m else name.rsplit(".", 1)[0]


def score(folder, samples_path, threads):
    torch.set_num_threads(int(threads))
    start = time.time()
    c, W = load(folder)
    loaded = time.time()
    with open(samples_path) as f:
        samples = json.load(f)["samples"]
    sums = {}
    for s in samples:
        ids = torch.tensor(s["ids"])
        positions = torch.tensor([t for t in range(len(s["ids"]) - 1) if s["mask"][t]])
        targets = ids[positions + 1]
        for t in W.values():
            t.grad = None
        loss_of(c, W, ids, positions, targets).backward()
        with torch.no_grad():
            for name, t in W.items():
                g = group_of(name)
                sums[g] = sums.get(g, 0.0) + (t * t.grad).abs().sum(dtype=torch.float64).item()
    end = time.time()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    json.dump({"seconds": end - loaded, "load_seconds": loaded - start, "peak_rss_bytes": peak,
               "scores": {g: v / len(samples) for g, v in sums.items()}}, sys.stdout)


if __name__ == "__main__":
    if len(sys.argv) == 10 and sys.argv[1] == "make":
        make(*sys.argv[2:])
    elif len(sys.argv) == 5 and sys.argv[1] == "score":
        score(*sys.argv[2:])
    else:
        raise SystemExit(__doc__)
