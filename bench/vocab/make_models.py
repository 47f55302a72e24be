#!/usr/bin/python3
"""Three Llama-layout stand-ins with the embedding / lm_head shapes of a 7B model's vocabulary (32000 or 32002 rows,
hidden H) in bfloat16, and BPE tokenizer.json files (a base, a ChatML fine-tune adding 2 tokens, a second fine-tune)."""
import json, os, struct, sys
import torch

H = int(sys.argv[2]) if len(sys.argv) > 2 else 4096
root = sys.argv[1]

def write(folder, seed, rows, added):
    os.makedirs(folder, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    tensors = {
        "model.embed_tokens.weight": torch.randn(rows, H, generator=g).to(torch.bfloat16),
        "model.layers.0.mlp.up_proj.weight": torch.randn(H, H, generator=g).to(torch.bfloat16),
        "model.norm.weight": torch.randn(H, generator=g).to(torch.bfloat16),
        "lm_head.weight": torch.randn(rows, H, generator=g).to(torch.bfloat16),
    }
    header, off, blobs = {}, 0, []
    for k, t in tensors.items():
        b = t.view(torch.int16).numpy().tobytes()
        header[k] = {"dtype": "BF16", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        off += len(b); blobs.append(b)
    h = json.dumps(header).encode(); h += b" " * ((8 - len(h) % 8) % 8)
    with open(folder + "/model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(h))); f.write(h)
        for b in blobs: f.write(b)
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for i in range(3, 32000): vocab["t%d" % i] = i
    addl = [{"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
            for i, c in [(0, "<unk>"), (1, "<s>"), (2, "</s>")] + [(32000 + j, c) for j, c in enumerate(added)]]
    tok = {"version": "1.0", "added_tokens": addl, "normalizer": None, "pre_tokenizer": None,
           "model": {"type": "BPE", "unk_token": "<unk>", "vocab": vocab, "merges": []}}
    json.dump(tok, open(folder + "/tokenizer.json", "w"))
    json.dump({"model_type": "llama", "hidden_size": H, "num_hidden_layers": 1, "vocab_size": rows, "torch_dtype": "bfloat16"},
              open(folder + "/config.json", "w"))

write(root + "/base", 1, 32000, [])
write(root + "/chatml", 2, 32002, ["<|im_start|>", "<|im_end|>"])
write(root + "/other", 3, 32001, ["<tool>"])
