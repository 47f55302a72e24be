#!/usr/bin/python3
"""Independent reference for vocabulary merges (mergekit's tokenizer_source / tokenizer block), in plain PyTorch.

Written from mergekit's documented behaviour (mergekit/tokenizer/build.py, embed.py, merge_methods): it reads the
models' tokenizer.json and safetensors files itself and prints, as JSON, the output vocabulary and the merged rows of
every embedding tensor. Run by VocabularyMergeTests with Debian's python3-torch (/usr/bin/python3).

Usage: vocab_reference.py SPEC.json   (see the test for the fields)
"""
import json
import struct
import sys

import torch

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
TORCH = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    body = data[8 + n :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        t = torch.frombuffer(bytearray(body[a:b]), dtype=DTYPES[info["dtype"]])
        out[name] = t.reshape(info["shape"]).clone()
    return out


def load_tokenizer(folder):
    with open(folder + "/tokenizer.json") as f:
        tok = json.load(f)
    vocab = dict(tok["model"]["vocab"])
    added = [(a["id"], a["content"], {k: v for k, v in a.items() if k != "id"}) for a in tok.get("added_tokens", [])]
    full = dict(vocab)
    for i, c, _ in added:
        full[c] = i
    return {"model": vocab, "added": sorted(added), "full": full}


def add_token(tok, content, flags):
    """Adds a token; a new one takes the id after the largest id in use."""
    full = tok["full"]
    if content in full:
        if not any(c == content for _, c, _ in tok["added"]):
            tok["added"].append((full[content], content, flags))
        return
    new_id = max(full.values()) + 1
    full[content] = new_id
    tok["added"].append((new_id, content, flags))


def build(spec):
    models = spec["models"]  # referenced order: base first
    base = spec["base"] or models[0]["name"]
    by_name = {m["name"]: m for m in models}
    toks = {m["name"]: load_tokenizer(m["folder"]) for m in models}
    # the base tokenizer without tokens at ids >= its vocab_size
    bt = toks[base]
    limit = by_name[base]["vocab_size"]
    bt["full"] = {t: i for t, i in bt["full"].items() if i < limit}
    bt["added"] = [a for a in bt["added"] if a[0] < limit]
    bt["model"] = {t: i for t, i in bt["model"].items() if i < limit}

    plain = {"single_word": False, "lstrip": False, "rstrip": False, "normalized": True, "special": False}
    source = spec["source"]
    if source == "base":
        out = json.loads(json.dumps(bt))
    elif source == "union":
        out = json.loads(json.dumps(bt))
        ordinary, added = [], {}
        for m in models:
            t = toks[m["name"]]
            size = m["vocab_size"]
            added_names = {c for _, c, _ in t["added"]}
            for tok_, i in sorted(t["full"].items(), key=lambda kv: kv[1]):
                if i < size and tok_ not in added_names and tok_ not in ordinary:
                    ordinary.append(tok_)
            for i, c, fl in t["added"]:
                if i < size and c not in added:
                    added[c] = fl
        for tok_ in ordinary:
            if tok_ not in added and tok_ not in bt["full"]:
                add_token(out, tok_, dict(plain, content=tok_))
        for c, fl in added.items():
            add_token(out, c, fl)
    else:
        out = json.loads(json.dumps(toks[source]))
    for t in spec.get("tokens", {}):
        add_token(out, t, dict(plain, content=t))
    vocab = out["full"]

    perms = {}
    for m in models:
        mv = toks[m["name"]]["full"]
        perms[m["name"]] = {i: (mv[t] if t in mv and mv[t] < m["vocab_size"] else -1) for t, i in vocab.items()}
    return vocab, perms, out


def permuted(spec, vocab, perms, tensors, base, dtype):
    """mergekit's PermutedEmbeddings for one tensor: {model: new [V, H] tensor}."""
    names = list(tensors)
    cfgs = dict(spec.get("tokens", {}))
    count = len(vocab)
    size = count
    pad = spec.get("pad_to_multiple_of")
    if pad and size % pad:
        size = (size // pad + 1) * pad
    hidden = tensors[names[0]].shape[1]
    average = set()
    for tok, i in vocab.items():
        if tok in cfgs:
            continue
        have = [n for n in names if perms[n][i] >= 0]
        if len(have) == 1:
            cfgs[tok] = {"source": have[0]}
        elif len(have) == 0:
            cfgs[tok] = {"source": {"kind": "zero"}}
        elif base is not None and perms[base][i] >= 0:
            cfgs[tok] = {"source": base}
        else:
            average.add(tok)
    defaults = {}
    for tok, i in vocab.items():
        if tok in average:
            e = torch.zeros(hidden, dtype=dtype)
            c = 0
            for n in names:
                if perms[n][i] >= 0:
                    e += tensors[n][perms[n][i]]
                    c += 1
            defaults[tok] = e / c
        elif tok in cfgs:
            src = cfgs[tok]["source"]
            if isinstance(src, dict) and src["kind"] == "zero":
                defaults[tok] = torch.zeros(hidden, dtype=dtype)
            elif isinstance(src, dict):
                ov = load_tokenizer([m for m in spec["models"] if m["name"] == src["model"]][0]["folder"])["full"]
                row = src["token_id"] if "token_id" in src else ov[src["token"]]
                defaults[tok] = tensors[src["model"]][row]
            else:
                defaults[tok] = tensors[src][perms[src][i]]
    out = {}
    for n in names:
        e = torch.zeros((size, hidden), dtype=dtype)
        for tok, i in vocab.items():
            force = spec.get("tokens", {}).get(tok, {}).get("force", False)
            if perms[n][i] >= 0 and not force:
                e[i] = tensors[n][perms[n][i]]
            else:
                e[i] = defaults[tok]
        if size > count:
            e[count:] = e[:count].to(torch.float64).mean(0).to(dtype)
        out[n] = e
    return out


def merge(spec, inputs, base):
    w = spec["weights"]
    experts = [n for n in inputs if n != base or spec["method"] == "linear"]
    if spec["method"] == "linear":
        total = sum(w[n] for n in experts)
        acc = sum(inputs[n].to(torch.float64) * w[n] for n in experts)
        return acc / total
    # task_arithmetic
    b = inputs[base].to(torch.float64)
    return b + sum((inputs[n].to(torch.float64) - b) * w[n] for n in experts)


def main():
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    dtype = TORCH[spec["dtype"]]
    vocab, perms, tok = build(spec)
    weights = {m["name"]: read_safetensors(m["folder"] + "/model.safetensors") for m in spec["models"]}
    base = spec["base"]
    rows = {}
    for tensor in spec["tensors"]:
        inputs = {n: weights[n][tensor].to(dtype) for n in weights}
        p = permuted(spec, vocab, perms, inputs, base, dtype)
        rows[tensor] = merge(spec, p, base).tolist()
    added = {str(i): fl for i, _, fl in tok["added"]}
    print(json.dumps({"vocab": vocab, "added": added, "rows": rows}))


main()
