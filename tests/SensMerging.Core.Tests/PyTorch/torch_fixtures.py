"""Test fixtures made with PyTorch's own torch.save (run by /usr/bin/python3, Debian's python3-torch).

  bin SRC DST [--shards N] [--views]   safetensors model folder SRC -> the same tensors as pytorch_model.bin in DST
                                       (sharded with pytorch_model.bin.index.json when N > 1); --views stores some
                                       tensors as non-contiguous views, views at a storage offset and shared storages
  evil PATH MARKER                     a state dict with an object whose __reduce__ is os.system("touch MARKER")
  legacy PATH                          a state dict in torch.save's legacy (non-zip) format
  strip-storage SRC DST                copy of a checkpoint without its first storage entry
  lora BASE ADAPTER OUT                explicitly merged model: W + scale * B @ A in float64, cast to W's dtype
  svd BASE FT RANK ENERGY              prints JSON: per linear weight that differs, the Frobenius norm of (FT - BASE)
                                       and of its best rank-RANK approximation's residual (float64 SVD), and the
                                       smallest rank keeping ENERGY of every module's squared singular values
"""
import collections
import json
import os
import shutil
import struct
import sys
import zipfile

import torch

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
          "BOOL": torch.bool}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    out = collections.OrderedDict()
    entries = [(k, v) for k, v in header.items() if k != "__metadata__"]
    entries.sort(key=lambda kv: kv[1]["data_offsets"][0])
    for name, info in entries:
        begin, end = info["data_offsets"]
        raw = bytearray(data[8 + n + begin:8 + n + end])
        dtype = DTYPES[info["dtype"]]
        t = torch.frombuffer(raw, dtype=dtype) if len(raw) else torch.empty(0, dtype=dtype)
        out[name] = t.reshape(info["shape"]).clone()
    return out


def read_folder(folder):
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    out = collections.OrderedDict()
    for name in files:
        out.update(read_safetensors(os.path.join(folder, name)))
    return out


def as_views(tensors):
    """Same values, other layouts: transposed storage, a storage offset, two tensors in one storage."""
    out = collections.OrderedDict()
    names = list(tensors)
    pair = [n for n in names if tensors[n].dim() == 2][:2]
    shared = None
    if len(pair) == 2 and tensors[pair[0]].dtype == tensors[pair[1]].dtype:
        a, b = tensors[pair[0]], tensors[pair[1]]
        shared = torch.cat([a.flatten(), b.flatten()])
    for i, name in enumerate(names):
        t = tensors[name]
        if shared is not None and name == pair[0]:
            out[name] = shared[:pair_numel(tensors, pair[0])].view(t.shape)
        elif shared is not None and name == pair[1]:
            out[name] = shared[pair_numel(tensors, pair[0]):].view(t.shape)
        elif t.dim() == 2 and i % 2 == 0:
            out[name] = t.t().contiguous().t()  # column-major: strides (1, rows)
            assert not out[name].is_contiguous()
        elif t.dim() >= 1:
            pad = torch.zeros(5, dtype=t.dtype)
            out[name] = torch.cat([pad, t.flatten()])[5:].view(t.shape)  # storage offset 5
        else:
            out[name] = t
    for name in names:
        assert torch.equal(out[name], tensors[name]), name
    return out


def pair_numel(tensors, name):
    return tensors[name].numel()


def write_bin(tensors, dst, shards):
    os.makedirs(dst, exist_ok=True)
    names = list(tensors)
    if shards <= 1:
        torch.save(tensors, os.path.join(dst, "pytorch_model.bin"))
        return
    per = (len(names) + shards - 1) // shards
    weight_map = {}
    for s in range(shards):
        part = collections.OrderedDict((n, tensors[n]) for n in names[s * per:(s + 1) * per])
        file = "pytorch_model-%05d-of-%05d.bin" % (s + 1, shards)
        torch.save(part, os.path.join(dst, file))
        for n in part:
            weight_map[n] = file
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    with open(os.path.join(dst, "pytorch_model.bin.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)


def copy_side_files(src, dst):
    for name in os.listdir(src):
        if name.endswith(".json") and not name.startswith("model.safetensors"):
            shutil.copy(os.path.join(src, name), os.path.join(dst, name))


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, ("touch " + self.marker,))


def main(argv):
    cmd = argv[0]
    if cmd == "bin":
        src, dst = argv[1], argv[2]
        shards = int(argv[argv.index("--shards") + 1]) if "--shards" in argv else 1
        tensors = read_folder(src)
        if "--views" in argv:
            tensors = as_views(tensors)
        write_bin(tensors, dst, shards)
        copy_side_files(src, dst)
    elif cmd == "evil":
        path, marker = argv[1], argv[2]
        state = collections.OrderedDict()
        state["model.embed_tokens.weight"] = torch.ones(2, 2)
        state["payload"] = Evil(marker)
        torch.save(state, path)
    elif cmd == "legacy":
        torch.save(collections.OrderedDict(w=torch.ones(2)), argv[1], _use_new_zipfile_serialization=False)
    elif cmd == "strip-storage":
        src, dst = argv[1], argv[2]
        with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
            dropped = False
            for info in zin.infolist():
                if "/data/" in info.filename and not dropped:
                    dropped = True
                    continue
                zout.writestr(info, zin.read(info.filename))
    elif cmd == "lora":
        base, adapter, out = argv[1], argv[2], argv[3]
        with open(os.path.join(adapter, "adapter_config.json")) as f:
            config = json.load(f)
        r, alpha = config["r"], config["lora_alpha"]
        scale = alpha / (r ** 0.5) if config.get("use_rslora") else alpha / r
        weights = read_folder(base)
        lora = read_safetensors(os.path.join(adapter, "adapter_model.safetensors"))
        prefix = "base_model.model."
        for key in lora:
            if not key.endswith(".lora_A.weight"):
                continue
            module = key[len(prefix):-len(".lora_A.weight")]
            a = lora[key].double()
            b = lora[key.replace("lora_A", "lora_B")].double()
            w = weights[module + ".weight"]
            weights[module + ".weight"] = (w.double() + scale * (b @ a)).to(w.dtype)
        os.makedirs(out, exist_ok=True)
        write_bin(weights, out, 1)
        copy_side_files(base, out)
    elif cmd == "svd":
        base, ft = read_folder(argv[1]), read_folder(argv[2])
        rank, energy = int(argv[3]), float(argv[4])
        result = {"norm": {}, "residual": {}, "rank_for_energy": 1}
        for name, w in ft.items():
            parts = name.split(".")
            if w.dim() != 2 or not name.endswith(".weight") or "embed_tokens" in parts or "lm_head" in parts:
                continue
            delta = w.double() - base[name].double()
            if not delta.any():
                continue
            s = torch.linalg.svdvals(delta)
            result["norm"][name] = float(delta.norm())
            result["residual"][name] = float(s[rank:].square().sum().sqrt())
            share = s.square().cumsum(0) / s.square().sum()
            result["rank_for_energy"] = max(result["rank_for_energy"], int((share < energy).sum()) + 1)
        print(json.dumps(result))
    else:
        raise SystemExit("unknown command " + cmd)


if __name__ == "__main__":
    main(sys.argv[1:])
