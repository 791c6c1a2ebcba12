#!/usr/bin/python3
"""Writes lmlab's golden fixtures: PyTorch's answers for every stage, as HDF5 files.

    /usr/bin/python3 scripts/export_golden.py [--out golden] [--only GLOB]

One HDF5 file per stage (golden/<level>/<name>.h5). Each file holds cases case_000, case_001, ...;
each case has inputs/<name> (float32, what the C++ side is fed), outputs/<name> (PyTorch's float32
answer, what the C++ side is compared with) and reference64/<name> (the same computation in float64
from the same float32 inputs: the "true" value both are measured against), plus the op's
parameters as attributes. golden/README.md documents the format; golden/manifest.json lists every
file with its sha256 so that the harness can tell a stale or damaged fixture.

Deterministic: every stage draws from its own torch.Generator seeded from SEED and the stage id,
torch runs single-threaded, and HDF5 object timestamps are off, so two runs give identical bytes.
"""
import argparse
import copy
import fnmatch
import json
import math
import os
import struct
import time
import zlib

import h5py
import numpy as np
import torch
import torch.nn.functional as F

import llama_ref
from golden_status import default_shared_dir, exporter_sha256, sha256_file
import tokenizer_ref
from llama_ref import apply_rope

FORMAT_VERSION = 1
SEED = 20261123
SCRIPTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(SCRIPTS_DIR)


def generator(stage_id):
    """A stage's own random stream: adding or reordering stages never changes another's data."""
    return torch.Generator().manual_seed(SEED + zlib.crc32(stage_id.encode()))


def randn(g, *shape, scale=1.0):
    return torch.randn(*shape, generator=g, dtype=torch.float32) * scale


# ---- Reference ops ------------------------------------------------------------------------------
# Each takes tensors (float32 or float64: the same code computes outputs and reference64) and
# the case's parameters, and returns a dict of named outputs.

def ref_matvec(inp, p):
    return {"y": torch.matmul(inp["W"], inp["x"])}


def ref_matmul(inp, p):
    return {"C": torch.matmul(inp["A"], inp["B"])}


def ref_softmax(inp, p):
    return {"y": F.softmax(inp["x"], dim=-1)}


def ref_rmsnorm(inp, p):
    # Zhang & Sennrich 2019: x / sqrt(mean(x^2) + eps) * weight
    x = inp["x"]
    return {"y": x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + p["eps"]) * inp["weight"]}


def ref_rope(inp, p):
    return {"y": apply_rope(inp["x"], p["pos"], p["head_dim"], p["theta"], p["style"])}


def ref_silu(inp, p):
    return {"y": F.silu(inp["x"])}


def ref_swiglu(inp, p):
    return {"y": F.silu(inp["a"]) * inp["b"]}


def ref_attention(inp, p):
    # one query over n_pos cached keys/values: softmax(K q / sqrt(d)) . V
    q, k, v = inp["q"], inp["k"], inp["v"]
    scores = torch.matmul(k, q) / math.sqrt(q.shape[-1])
    probs = F.softmax(scores, dim=-1)
    return {"out": torch.matmul(probs, v), "probs": probs}


def ref_argmax(inp, p):
    # torch.argmax returns the first maximal index; stored as float so every output is numeric
    return {"index": torch.argmax(inp["x"]).reshape(1).to(inp["x"].dtype)}


# ---- Cases --------------------------------------------------------------------------------------
# A case: (description, params, inputs). Chosen to break kernels, not to pass them.

def cases_matvec(g):
    out = []
    for rows, cols, why in [(256, 256, "wq/wk/wv/wo of the tiny LLaMA"), (1024, 256, "w1/w3: dim -> ffn"),
                            (256, 1024, "w2: ffn -> dim"), (16, 1024, "long reduction, in = 1024"),
                            (8, 16384, "very long reduction, in = 16384"),
                            (16384, 256, "classifier: dim -> vocab 16384")]:
        # W scaled by 1/sqrt(in) so outputs are O(1), as in a trained layer
        out.append((f"{rows}x{cols}: {why}", {},
                    {"W": randn(g, rows, cols, scale=cols ** -0.5), "x": randn(g, cols)}))
    return out


def cases_matmul(g):
    return [("[3,5]·[5,7] odd shapes", {}, {"A": randn(g, 3, 5), "B": randn(g, 5, 7)}),
            ("[4,256]·[256,256] four tokens through wq", {}, {"A": randn(g, 4, 256), "B": randn(g, 256, 256, scale=1 / 16)}),
            ("[16,1024]·[1024,8] long reduction", {}, {"A": randn(g, 16, 1024), "B": randn(g, 1024, 8, scale=1 / 32)})]


def cases_softmax(g):
    masked = randn(g, 64)
    masked[[3, 40]] = float("-inf")
    return [("[1, 2, 3] textbook", {}, {"x": torch.tensor([1.0, 2.0, 3.0])}),
            ("large magnitudes ±1e4 (overflows without max subtraction)", {},
             {"x": (torch.rand(32, generator=g) * 2 - 1) * 1e4}),
            ("close values near 1e4", {}, {"x": 1e4 + randn(g, 16)}),
            ("-inf masked entries get exactly 0", {}, {"x": masked}),
            ("single element", {}, {"x": torch.tensor([-3.25])}),
            ("512 attention scores", {}, {"x": randn(g, 512, scale=3.0)}),
            ("16384 logits", {}, {"x": randn(g, 16384, scale=4.0)})]


def cases_rmsnorm(g):
    w = 1.0 + randn(g, 256, scale=0.1)
    return [("dim 256 typical activations", {"eps": 1e-5}, {"x": randn(g, 256), "weight": w}),
            ("all zeros (eps keeps 1/sqrt finite)", {"eps": 1e-5}, {"x": torch.zeros(256), "weight": w}),
            ("tiny values 1e-6 (eps dominates)", {"eps": 1e-5}, {"x": randn(g, 256, scale=1e-6), "weight": w}),
            ("large values 1e3", {"eps": 1e-5}, {"x": randn(g, 256, scale=1e3), "weight": w}),
            ("dim 64, eps 1e-6 (Qwen2-style eps)", {"eps": 1e-6}, {"x": randn(g, 64), "weight": w[:64].clone()})]


def cases_rope(g):
    out = []
    x = randn(g, 256)
    for style in ("adjacent", "rotate_half"):
        for pos in (0, 1, 17, 511):
            what = {0: "identity", 1: "first position", 17: "typical", 511: "max_seq_len-1: largest angles"}[pos]
            out.append((f"{style}, pos {pos} ({what}), 4 heads x 64", {"pos": pos, "head_dim": 64, "theta": 10000.0, "style": style},
                        {"x": x.clone()}))
    out.append(("adjacent, head_dim 128, theta 1e6 (Qwen2-like), pos 300", {"pos": 300, "head_dim": 128, "theta": 1e6, "style": "adjacent"},
                {"x": randn(g, 256)}))
    return out


def cases_silu(g):
    return [("1024 activations", {}, {"x": randn(g, 1024, scale=3.0)}),
            ("extremes: large positive and negative, zero", {}, {"x": torch.tensor([-100.0, -20.0, -1.0, 0.0, 1.0, 20.0, 100.0])})]


def cases_swiglu(g):
    return [("ffn 1024", {}, {"a": randn(g, 1024, scale=2.0), "b": randn(g, 1024)})]


def cases_attention(g):
    out = []
    for n_pos in (1, 2, 17, 512):
        out.append((f"{n_pos} cached positions, head_dim 64", {},
                    {"q": randn(g, 64), "k": randn(g, n_pos, 64), "v": randn(g, n_pos, 64)}))
    # key 7 points along q with q·k/sqrt(64) = 40: softmax is nearly one-hot (exp(40) dwarfs the rest)
    q = randn(g, 64, scale=2.0)
    k = randn(g, 33, 64)
    k[7] = q * (40.0 * 8.0 / float(q.dot(q)))
    out.append(("peaked: key 7 matches with score 40, the rest ~N(0, 4)", {}, {"q": q, "k": k, "v": randn(g, 33, 64)}))
    return out


def cases_argmax(g):
    ties = torch.zeros(100)
    ties[[7, 42, 99]] = 5.0
    last = randn(g, 64)
    last[-1] = 100.0
    return [("16384 logits", {}, {"x": randn(g, 16384)}),
            ("ties: the first maximum wins", {}, {"x": ties}),
            ("maximum at the last index", {}, {"x": last})]


# stage id -> (cases, reference op)
KERNEL_STAGES = {
    "kernel.matvec": (cases_matvec, ref_matvec),
    "kernel.matmul": (cases_matmul, ref_matmul),
    "kernel.softmax": (cases_softmax, ref_softmax),
    "kernel.rmsnorm": (cases_rmsnorm, ref_rmsnorm),
    "kernel.rope": (cases_rope, ref_rope),
    "kernel.silu": (cases_silu, ref_silu),
    "kernel.swiglu": (cases_swiglu, ref_swiglu),
    "kernel.attention": (cases_attention, ref_attention),
    "kernel.argmax": (cases_argmax, ref_argmax),
}


# ---- Writing ------------------------------------------------------------------------------------

def write_attr(obj, key, value):
    if isinstance(value, str):
        obj.attrs.create(key, value, dtype=h5py.string_dtype("utf-8"))
    elif isinstance(value, bool):
        obj.attrs[key] = np.int64(value)
    elif isinstance(value, int):
        obj.attrs[key] = np.int64(value)
    elif isinstance(value, float):
        obj.attrs[key] = np.float64(value)
    elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        obj.attrs.create(key, list(value), dtype=h5py.string_dtype("utf-8"))
    else:
        obj.attrs[key] = np.asarray(value)


def write_dataset(group, name, tensor, dtype):
    arr = tensor.detach().cpu().numpy().astype(dtype)
    group.create_dataset(name, data=arr, track_times=False)


def _ordered_untimed(plist):
    """Property list: remember creation order (h5ls/h5dump show groups as written) and store no
    timestamps (HDF5 records object times by default, which would make every export differ)."""
    plist.set_obj_track_times(False)
    plist.set_link_creation_order(h5py.h5p.CRT_ORDER_TRACKED | h5py.h5p.CRT_ORDER_INDEXED)
    return plist


def create_group(parent, name):
    gid = h5py.h5g.create(parent.id, name.encode(), gcpl=_ordered_untimed(h5py.h5p.create(h5py.h5p.GROUP_CREATE)))
    return h5py.Group(gid)


def open_fixture(path, stage_id, level, sha):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fcpl = _ordered_untimed(h5py.h5p.create(h5py.h5p.FILE_CREATE))
    f = h5py.File(h5py.h5f.create(path.encode(), h5py.h5f.ACC_TRUNC, fcpl=fcpl))
    write_attr(f, "stage", stage_id)
    write_attr(f, "level", level)
    write_attr(f, "format_version", FORMAT_VERSION)
    write_attr(f, "torch_version", torch.__version__)
    write_attr(f, "seed", SEED)
    write_attr(f, "exporter_sha256", sha)
    return f


def write_case(f, index, desc, params, inputs, outputs, reference64, extra_order=None):
    grp = create_group(f, f"case_{index:03d}")
    write_attr(grp, "description", desc)
    for k, v in params.items():
        write_attr(grp, k, v)
    for sub, tensors, dtype in (("inputs", inputs, np.float32), ("outputs", outputs, np.float32),
                                ("reference64", reference64, np.float64)):
        sg = create_group(grp, sub)
        for name, t in tensors.items():
            write_dataset(sg, name, t, dtype)


def export_kernel_stage(stage_id, cases_fn, ref_fn, out_dir, sha):
    path = os.path.join(out_dir, "kernel", stage_id.split(".", 1)[1] + ".h5")
    g = generator(stage_id)
    with open_fixture(path, stage_id, "kernel", sha) as f:
        for i, (desc, params, inputs) in enumerate(cases_fn(g)):
            inputs = {k: v.to(torch.float32).contiguous() for k, v in inputs.items()}
            outputs = ref_fn(inputs, params)
            reference64 = ref_fn({k: v.double() for k, v in inputs.items()}, params)
            write_case(f, i, desc, params, inputs, outputs, reference64)
    return path


# ---- Models, layers, generation -------------------------------------------------------------------
# The default model: the seed spec's tiny LLaMA, built from a fixed seed. Its vocabulary is trained
# with SentencePiece on the King James Bible (tokenizer_ref.py) and stored in the same file.

TINY_LLAMA = dict(dim=256, n_layers=2, n_heads=4, n_kv_heads=4, ffn_dim=1024, vocab_size=16384, max_seq_len=512,
                  rope_theta=10000.0, rope_style="adjacent", norm_eps=1e-5, tied_embeddings=False)
TINY_LLAMA_FILE = "models/tiny-llama.h5"


def build_tiny_llama():
    """Random init that keeps activations O(1) through both layers (every Linear ~ N(0, 1/in), so a
    unit-variance input gives unit-variance outputs; norm weights near 1) and logits spread wide
    enough (std ~3) that greedy decoding is not a sequence of near-ties."""
    cfg = llama_ref.Config(**TINY_LLAMA)
    model = llama_ref.Llama(cfg)
    g = generator("model.tiny-llama")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + randn(g, *p.shape, scale=0.1))
            elif name == "tok_embeddings.weight":
                p.copy_(randn(g, *p.shape))
            elif name == "output.weight":
                p.copy_(randn(g, *p.shape, scale=3.0 / math.sqrt(cfg.dim)))
            else:  # nn.Linear [out, in]
                p.copy_(randn(g, *p.shape, scale=p.shape[1] ** -0.5))
    return model.eval()


def write_model_file(path, model, sha, vocab=None):
    """Config as root attributes; every tensor under its PyTorch name, [out, in] as nn.Linear keeps it;
    the vocabulary (llama2.c convention: pieces with ' ' for U+2581, scores) under tokenizer/."""
    f = open_fixture(path, "model.weights", "model", sha)
    with f:
        for k, v in model.cfg.attrs().items():
            write_attr(f, k, v)
        for name, t in model.state_dict().items():
            if name == "output.weight" and model.cfg.tied_embeddings:
                continue  # tied: the classifier is tok_embeddings.weight
            write_dataset(f, name, t, np.float32)
        if vocab is not None:
            pieces, scores = vocab
            tg = create_group(f, "tokenizer")
            tg.create_dataset("pieces", data=[p.encode("utf-8") for p in pieces], dtype=h5py.string_dtype("utf-8"), track_times=False)
            tg.create_dataset("scores", data=np.asarray(scores, dtype=np.float32), track_times=False)
    return path


_MODEL_CACHE = {}


def default_model(out_dir, sha):
    """Builds the tiny LLaMA and writes its file once per export."""
    if "tiny" not in _MODEL_CACHE:
        text = tokenizer_ref.kjv_text()
        model_proto = tokenizer_ref.train_default_vocab(text, TINY_LLAMA["vocab_size"])
        vocab = tokenizer_ref.spm_vocab(model_proto)
        model = build_tiny_llama()
        path = write_model_file(os.path.join(out_dir, TINY_LLAMA_FILE), model, sha, vocab)
        _MODEL_CACHE["tiny"] = (model, path, model_proto, vocab, text)
    return _MODEL_CACHE["tiny"]


def as64(model):
    return copy.deepcopy(model).double()


def capture(model, fn):
    """Runs fn(model) under a Recorder; returns name -> last recorded value (one token)."""
    rec = llama_ref.Recorder(model)
    with torch.no_grad():
        fn(model)
    rec.remove()
    return {k: v[-1] for k, v in rec.values.items() if v}


def layer_case(model, layer, pos, x, cache_k, cache_v, part):
    """Runs one part ('attention', 'ffn', 'block') of layer `layer` at position pos on input x with
    a cache whose rows < pos are given; returns the named outputs in pipeline order."""
    c = model.cfg
    dtype = next(model.parameters()).dtype
    ck = torch.zeros(c.max_seq_len, c.kv_dim, dtype=dtype)
    cv = torch.zeros(c.max_seq_len, c.kv_dim, dtype=dtype)
    ck[:pos], cv[:pos] = cache_k.to(dtype), cache_v.to(dtype)
    blk = model.layers[layer]
    x = x.to(dtype)
    if part == "ffn":
        with torch.no_grad():
            return {"out": blk.feed_forward(x)}
    if part == "attention":
        rec = capture(model, lambda m: blk.attention(x, pos, ck, cv))
        return {"q": rec[f"layer{layer}.q"], "k": rec[f"layer{layer}.k"], "v": rec[f"layer{layer}.v"],
                "out": rec[f"layer{layer}.attn_out"]}
    rec = capture(model, lambda m: blk(x, pos, ck, cv))
    return {name: rec[f"layer{layer}.{name}"] for name, _ in llama_ref.BLOCK_INTERMEDIATES}


def export_layer_stage(stage_id, out_dir, sha):
    model, model_path, _, _, _ = default_model(out_dir, sha)
    model64 = as64(model)
    part = stage_id.split(".")[1]
    c = model.cfg
    g = generator(stage_id)
    if part == "attention":
        points = [(0, 0, "position 0: empty cache"), (1, 1, "position 1"), (0, 17, "typical position"),
                  (1, c.max_seq_len - 2, "near max_seq_len: 510 cached positions")]
    elif part == "ffn":
        points = [(0, 0, "layer 0"), (1, 0, "layer 1")]
    else:
        points = [(0, 0, "layer 0 at position 0"), (1, 5, "layer 1 at position 5 with 5 cached positions")]
    path = os.path.join(out_dir, "layer", part + ".h5")
    with open_fixture(path, stage_id, "layer", sha) as f:
        write_attr(f, "model", TINY_LLAMA_FILE)
        for i, (layer, pos, why) in enumerate(points):
            x = randn(g, c.dim)
            ck, cv = randn(g, pos, c.kv_dim), randn(g, pos, c.kv_dim)
            inputs = {"x": x} if part == "ffn" else {"x": x, "cache_k": ck, "cache_v": cv}
            params = {"layer": layer} if part == "ffn" else {"layer": layer, "pos": pos}
            write_case(f, i, why, params, inputs, layer_case(model, layer, pos, x, ck, cv, part),
                       layer_case(model64, layer, pos, x, ck, cv, part))
    return [path]


def forward_outputs(model, tokens):
    """Every intermediate of a token-by-token run, stacked over positions, in pipeline order."""
    values, cache = llama_ref.run_tokens(model, tokens, next(model.parameters()).dtype)
    out = {}
    for i in range(model.cfg.n_layers):
        out[f"layer{i}.in"] = values[f"layer{i}.in"]
        for name, _ in llama_ref.BLOCK_INTERMEDIATES:
            out[f"layer{i}.{name}"] = values[f"layer{i}.{name}"]
    out["final_norm"] = values["final_norm"]
    out["logits"] = values["logits"]
    n = len(tokens)
    return out, {"cache_k": cache[0][:, :n], "cache_v": cache[1][:, :n]}


def default_prompt(vocab_size, n, stage_id):
    g = generator(stage_id + ".prompt")
    return torch.randint(3, vocab_size, (n,), generator=g)


def export_model_stage(stage_id, out_dir, sha):
    model, _, _, _, _ = default_model(out_dir, sha)
    tokens = default_prompt(model.cfg.vocab_size, 16, "model.tiny-llama")
    out32, cache32 = forward_outputs(model, tokens)
    out64, cache64 = forward_outputs(as64(model), tokens)
    name = stage_id.split(".", 1)[1]
    path = os.path.join(out_dir, "model", name + ".h5")
    with open_fixture(path, stage_id, "model", sha) as f:
        write_attr(f, "model", TINY_LLAMA_FILE)
        if name == "forward":
            write_case(f, 0, "16-token prompt, every intermediate at every position", {}, {"tokens": tokens}, out32, out64)
        else:
            write_case(f, 0, "keys and values cached after a 16-token prompt", {}, {"tokens": tokens}, cache32, cache64)
    return [path]


def generation_outputs(model, prompt, n_new):
    """Greedy tokens (float32 model) and the logits at every step; reference64's logits come from the
    float64 model fed the same token sequence, so they stay comparable even after a near-tie."""
    tokens, logits32 = llama_ref.greedy(model, prompt, n_new)
    seq = torch.cat([prompt, torch.tensor(tokens[:-1], dtype=prompt.dtype)])
    values64, _ = llama_ref.run_tokens(as64(model), seq, torch.float64)
    logits64 = values64["logits"][len(prompt) - 1:]
    return tokens, logits32, logits64


def export_generation_stage(stage_id, out_dir, sha):
    model, _, _, _, _ = default_model(out_dir, sha)
    prompt = default_prompt(model.cfg.vocab_size, 8, "generation.tiny-llama")
    tokens, logits32, logits64 = generation_outputs(model, prompt, 64)
    path = os.path.join(out_dir, "generation", "greedy.h5")
    with open_fixture(path, stage_id, "generation", sha) as f:
        write_attr(f, "model", TINY_LLAMA_FILE)
        write_case(f, 0, "64 greedy tokens after an 8-token prompt", {"max_new_tokens": 64}, {"prompt": prompt},
                   {"tokens": torch.tensor(tokens, dtype=torch.float32), "logits": logits32}, {"logits": logits64})
    return [path]


# ---- Real checkpoints and tokenizers from ../shared -------------------------------------------------
# Stages that need ../shared are exported only when it is present; the harness skips them otherwise.

SHARED_DIR = default_shared_dir()  # --shared overrides

STORIES_MODEL = "models/stories260K/stories260K.bin"
STORIES_TOKENIZER = "models/stories260K/tok512.bin"
LLAMA2_TOKENIZER = "tokenizers/llama2/tokenizer.bin"
LLAMA2_SPM_MODEL = "tokenizers/llama2/tokenizer.model"
SHARED_FILES = sorted([STORIES_MODEL, STORIES_TOKENIZER, LLAMA2_TOKENIZER, LLAMA2_SPM_MODEL])  # presence is in the manifest


def shared_path(rel):
    return os.path.join(SHARED_DIR, rel)


def read_llama2c_vocab(path, vocab_size):
    """A llama2.c tokenizer.bin: int32 max_token_length, then per token float32 score, int32 len, bytes."""
    with open(path, "rb") as f:
        data = f.read()
    off, pieces, scores = 4, [], []
    for _ in range(vocab_size):
        score, n = struct.unpack_from("<fi", data, off)
        off += 8
        pieces.append(data[off:off + n].decode("utf-8"))
        scores.append(score)
        off += n
    return pieces, scores


def stories_prompt(n):
    """BOS + the start of a TinyStories-like sentence, encoded by SentencePiece with tok512."""
    pieces, scores = read_llama2c_vocab(shared_path(STORIES_TOKENIZER), 512)
    proto = tokenizer_ref.spm_from_llama2c(pieces, scores)
    ids = [1] + tokenizer_ref.spm_encode(proto, ["Once upon a time, there was a little girl named Lily. She loved to play"])[0]
    return torch.tensor(ids[:n])


def export_stories_stage(stage_id, out_dir, sha):
    if not os.path.exists(shared_path(STORIES_MODEL)):
        print(f"export_golden: {stage_id} skipped: {shared_path(STORIES_MODEL)} not found")
        return []
    model = llama_ref.load_llama2c(shared_path(STORIES_MODEL)).eval()
    level = stage_id.split(".")[0]
    if level == "model":
        tokens = stories_prompt(16)
        out32, _ = forward_outputs(model, tokens)
        out64, _ = forward_outputs(as64(model), tokens)
        path = os.path.join(out_dir, "model", "forward_stories260k.h5")
        with open_fixture(path, stage_id, "model", sha) as f:
            write_attr(f, "model", "shared:" + STORIES_MODEL)
            write_case(f, 0, f"{len(tokens)}-token prompt, every intermediate at every position", {},
                       {"tokens": tokens}, out32, out64)
    else:
        prompt = torch.tensor([1])
        tokens, logits32, logits64 = generation_outputs(model, prompt, 256)
        path = os.path.join(out_dir, "generation", "greedy_stories260k.h5")
        with open_fixture(path, stage_id, "generation", sha) as f:
            write_attr(f, "model", "shared:" + STORIES_MODEL)
            write_case(f, 0, "256 greedy tokens from BOS", {"max_new_tokens": 256}, {"prompt": prompt},
                       {"tokens": torch.tensor(tokens, dtype=torch.float32), "logits": logits32}, {"logits": logits64})
    return [path]


def export_tokenizer_stage(stage_id, out_dir, sha):
    """(text -> ids) pairs produced by SentencePiece itself, for every vocabulary the project uses."""
    name = stage_id.split(".", 1)[1]
    _, _, default_proto, _, text = default_model(out_dir, sha)
    if name == "default":
        proto, source, vocab_size = default_proto, TINY_LLAMA_FILE, TINY_LLAMA["vocab_size"]
    elif name == "llama2":
        if not os.path.exists(shared_path(LLAMA2_SPM_MODEL)):
            print(f"export_golden: {stage_id} skipped: {shared_path(LLAMA2_SPM_MODEL)} not found")
            return []
        with open(shared_path(LLAMA2_SPM_MODEL), "rb") as f:
            proto = f.read()
        source, vocab_size = "shared:" + LLAMA2_TOKENIZER, 32000
    else:
        if not os.path.exists(shared_path(STORIES_TOKENIZER)):
            print(f"export_golden: {stage_id} skipped: {shared_path(STORIES_TOKENIZER)} not found")
            return []
        proto = tokenizer_ref.spm_from_llama2c(*read_llama2c_vocab(shared_path(STORIES_TOKENIZER), 512))
        source, vocab_size = "shared:" + STORIES_TOKENIZER, 512
    texts = tokenizer_ref.tokenizer_cases(text)
    ids = tokenizer_ref.spm_encode(proto, texts)
    path = os.path.join(out_dir, "tokenizer", name + ".h5")
    with open_fixture(path, stage_id, "tokenizer", sha) as f:
        write_attr(f, "tokenizer", source)
        write_attr(f, "vocab_size", vocab_size)
        for i, (t, case_ids) in enumerate(zip(texts, ids)):
            raw = t.encode("utf-8")
            preview = t[:60].encode("unicode_escape").decode("ascii") + ("…" if len(t) > 60 else "")
            desc = f"{len(raw)} bytes: {preview}" if t else "empty string"
            grp = create_group(f, f"case_{i:03d}")
            write_attr(grp, "description", desc)
            # raw UTF-8 bytes: any byte string fits, and h5dump shows exactly what was encoded
            create_group(grp, "inputs").create_dataset("text", data=np.frombuffer(raw, dtype=np.uint8), track_times=False)
            out = create_group(grp, "outputs")
            out.create_dataset("ids", data=np.asarray(case_ids, dtype=np.float32), track_times=False)
            out.create_dataset("n_ids", data=np.asarray([len(case_ids)], dtype=np.float32), track_times=False)
    return [path]


EXTRA_STAGES = {
    "layer.attention": export_layer_stage,
    "layer.ffn": export_layer_stage,
    "layer.block": export_layer_stage,
    "model.forward": export_model_stage,
    "model.kv_cache": export_model_stage,
    "generation.greedy": export_generation_stage,
    "model.forward.stories260k": export_stories_stage,
    "generation.greedy.stories260k": export_stories_stage,
    "tokenizer.default": export_tokenizer_stage,
    "tokenizer.llama2": export_tokenizer_stage,
    "tokenizer.stories260k": export_tokenizer_stage,
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(REPO_DIR, "golden"), help="output folder (default: golden/)")
    ap.add_argument("--shared", default=None, help="folder with models/ and tokenizers/ (default: $LMLAB_SHARED or ../shared)")
    ap.add_argument("--only", default="*", help="export only stages matching this glob (manifest still lists all files present)")
    args = ap.parse_args()

    global SHARED_DIR
    if args.shared:
        SHARED_DIR = args.shared
    torch.set_num_threads(1)  # deterministic reductions
    torch.use_deterministic_algorithms(True)
    sha = exporter_sha256()
    t0 = time.perf_counter()
    written = []
    for stage_id, (cases_fn, ref_fn) in KERNEL_STAGES.items():
        if fnmatch.fnmatch(stage_id, args.only):
            written.append(export_kernel_stage(stage_id, cases_fn, ref_fn, args.out, sha))
    # stages beyond the kernels: stage id -> function(stage_id, out_dir, sha) -> written paths
    for stage_id, export_fn in EXTRA_STAGES.items():
        if fnmatch.fnmatch(stage_id, args.only):
            written.extend(export_fn(stage_id, args.out, sha))

    # the manifest lists every fixture present under out/, so a partial (--only) export keeps it whole
    files = {}
    for root, _, names in os.walk(args.out):
        for name in sorted(names):
            if name.endswith(".h5"):
                full = os.path.join(root, name)
                files[os.path.relpath(full, args.out)] = sha256_file(full)
    manifest = {"format_version": FORMAT_VERSION, "exporter_sha256": sha, "torch_version": torch.__version__,
                "seed": SEED, "files": dict(sorted(files.items())),
                # which ../shared files are there: golden_status.py re-exports when that changes
                "shared_files": {rel: os.path.exists(os.path.join(SHARED_DIR, rel)) for rel in SHARED_FILES}}
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    print(f"export_golden: wrote {len(written)} fixture files to {args.out} in {time.perf_counter() - t0:.1f} s")



if __name__ == "__main__":
    main()
