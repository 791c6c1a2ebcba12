#!/usr/bin/env python3
"""Writes lmlab's golden fixtures: the references' answers for every stage, as HDF5 files.

    .venv/bin/python scripts/export_golden.py [--out golden] [--only GLOB] [--lmlab build/default/lmlab]

The list of stages comes from the lmlab binary (`lmlab list --json`, the stage table in
harness/stages.cpp): this script never keeps its own. Each row names its level, its model and its
fixture; the fixture is written once even when several stages share it. The references are PyTorch
built-ins for the kernels, our PyTorch LLaMA (llama_ref.py) and transformers' GPT2LMHeadModel
(ref_gpt2.py) for the models, SentencePiece, tiktoken and HF tokenizers for the tokenizers.

One HDF5 file per fixture (golden/<level>/<name>.h5). Each file holds cases case_000, case_001, ...;
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
import hashlib
import json
import math
import os
import shutil
import struct
import subprocess
import time
import zlib

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing is ever downloaded from a model hub
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import h5py
import numpy as np
import torch
import torch.nn.functional as F

import llama_ref
import ref_gpt2
import ref_hf_llama
import ref_hf_moe
import ref_q8
from golden_status import default_lmlab, default_shared_dir, exporter_sha256, sha256_file, stage_table_json
import tokenizer_ref
import tokenizer_bpe_ref
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


def ref_matmul_xwt(inp, p):
    # a prompt of T tokens through one nn.Linear at once: X [T, in] @ W.T -> [T, out]
    return {"y": torch.matmul(inp["X"], inp["W"].T)}


def ref_linear(inp, p):
    return {"y": F.linear(inp["x"], inp["W"], inp["b"] if inp["b"].numel() else None)}


def ref_add(inp, p):
    return {"y": torch.add(inp["a"], inp["b"])}


def ref_layernorm(inp, p):
    return {"y": F.layer_norm(inp["x"], inp["x"].shape, inp["weight"], inp["bias"], p["eps"])}


def ref_gelu_tanh(inp, p):
    return {"y": F.gelu(inp["x"], approximate="tanh")}


def ref_gelu_erf(inp, p):
    return {"y": F.gelu(inp["x"])}


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


def ref_quantize_q8_0(inp, p):
    # runq.c's quantize() (ref_q8.py): C's round(), not torch.round; q stored as floats
    q, scales = ref_q8.quantize_q8_0(inp["x"], p["group"])
    return {"q": q.to(inp["x"].dtype), "scales": scales}


def ref_matvec_q8_0(inp, p):
    # runq.c's matmul() (ref_q8.py): exact int32 group sums, then its float steps in its order
    # (in float64 for reference64: the exact value of the same quantized product)
    return {"y": ref_q8.matvec_q8_0(inp["Wq"].to(torch.int8), inp["Ws"], inp["xq"].to(torch.int8), inp["xs"], p["group"])}


# ---- Cases --------------------------------------------------------------------------------------
# A case: (description, params, inputs). Chosen to break kernels, not to pass them.

def cases_matvec(g):
    out = []
    for rows, cols, why in [(256, 256, "wq/wk/wv/wo of the tiny LLaMA"), (1024, 256, "w1/w3: dim -> ffn"),
                            (256, 1024, "w2: ffn -> dim"), (16, 1024, "long reduction, in = 1024"),
                            (8, 16384, "very long reduction, in = 16384"),
                            (16384, 64, "classifier: dim 64 -> vocab 16384 (many rows)")]:
        # W scaled by 1/sqrt(in) so outputs are O(1), as in a trained layer
        out.append((f"{rows}x{cols}: {why}", {},
                    {"W": randn(g, rows, cols, scale=cols ** -0.5), "x": randn(g, cols)}))
    return out


def cases_matmul_xwt(g):
    out = []
    for T, rows, cols, why in [(1, 256, 256, "1 token (decode) through wq of the tiny LLaMA"),
                               (7, 1024, 256, "7 tokens through w1: dim -> ffn"),
                               (128, 256, 256, "128-token prompt through a 256x256 projection"),
                               (4, 8, 16384, "long reduction, in = 16384"),
                               (33, 37, 65, "odd sizes: 33 tokens, 37 rows, in = 65 (tails everywhere)")]:
        # W scaled by 1/sqrt(in) so outputs are O(1), as in a trained layer
        out.append((f"{T} tokens x {rows}x{cols}: {why}", {},
                    {"X": randn(g, T, cols), "W": randn(g, rows, cols, scale=cols ** -0.5)}))
    return out


def cases_linear(g):
    out = []
    for rows, cols, bias, why in [(384, 128, True, "GPT-2 c_attn: dim -> 3*dim with bias"),
                                  (128, 512, True, "GPT-2 mlp.c_proj: 4*dim -> dim with bias"),
                                  (256, 256, False, "LLaMA wq: no bias (empty b)"),
                                  (8, 16384, True, "long reduction with a bias of ~1e3 next to O(1) products")]:
        b = randn(g, rows, scale=1e3 if cols == 16384 else 0.1) if bias else torch.zeros(0)
        out.append((f"{rows}x{cols}: {why}", {}, {"W": randn(g, rows, cols, scale=cols ** -0.5), "x": randn(g, cols), "b": b}))
    return out


def cases_add(g):
    return [("token row + position row (GPT-2 embedding), dim 128", {}, {"a": randn(g, 128), "b": randn(g, 128)}),
            ("residual: 1e4 + 1e-3 (the small term rounds away in float32 as in torch)", {},
             {"a": torch.full((64,), 1e4) + randn(g, 64), "b": randn(g, 64, scale=1e-3)}),
            ("opposite signs cancel exactly", {}, {"a": torch.tensor([1.5, -2.25, 3e38]), "b": torch.tensor([-1.5, 2.25, -3e38])})]


def cases_layernorm(g):
    w = 1.0 + randn(g, 128, scale=0.1)
    b = randn(g, 128, scale=0.1)
    return [("dim 128 typical activations", {"eps": 1e-5}, {"x": randn(g, 128), "weight": w, "bias": b}),
            # torch's float32 kernel is itself off by up to 1e-4 (constant), 4e-2 (1e4 ± 1e-2) and 5e-4 (dim 1)
            # in these cases: it forms x·rstd and mean·rstd in float32 and subtracts them, so a large |x|·rstd
            # cancels. compare_with: these cases are held to the float64 truth (rounded to float32).
            ("constant vector: variance 0, eps dominates, y = bias", {"eps": 1e-5, "compare_with": "reference64"},
             {"x": torch.full((128,), 3.25), "weight": w, "bias": b}),
            ("values around 1e4 with noise 1e-2 (E[x²]-E[x]² cancels catastrophically)",
             {"eps": 1e-5, "compare_with": "reference64"}, {"x": 1e4 + randn(g, 128, scale=1e-2), "weight": w, "bias": b}),
            ("dim 1: the output is the bias", {"eps": 1e-5, "compare_with": "reference64"}, {"x": torch.tensor([42.0]), "weight": w[:1].clone(), "bias": b[:1].clone()}),
            ("large values 1e3, eps 1e-6", {"eps": 1e-6}, {"x": randn(g, 128, scale=1e3), "weight": w, "bias": b}),
            ("dim 768 (GPT-2 124M)", {"eps": 1e-5},
             {"x": randn(g, 768, scale=2.0), "weight": 1.0 + randn(g, 768, scale=0.1), "bias": randn(g, 768, scale=0.1)})]


def _gelu_inputs(g):
    return [("±10 (saturation: x and 0)", {}, {"x": torch.tensor([10.0, -10.0, 9.5, -9.5])}),
            ("±1e-4 (slope 1/2 at 0)", {}, {"x": torch.tensor([1e-4, -1e-4, 1e-7, -1e-7, 0.0])}),
            ("large negatives (no NaN: -0 and tiny values)", {}, {"x": torch.tensor([-20.0, -50.0, -100.0, -1e4, -3.0, -5.0])}),
            ("|x| around 2, where tanh and erf differ most", {}, {"x": torch.linspace(-4, 4, 161)}),
            ("2048 activations ~N(0, 3²)", {}, {"x": randn(g, 2048, scale=3.0)})]


def cases_gelu_tanh(g):
    return _gelu_inputs(g)


def cases_gelu_erf(g):
    return _gelu_inputs(g)


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
            params = {"pos": pos, "head_dim": 64, "theta": 10000.0, "style": style}
            if pos >= LONG_ANGLE_POS:
                params["compare_with"] = "reference64"
            out.append((f"{style}, pos {pos} ({what}), 4 heads x 64", params, {"x": x.clone()}))
    out.append(("adjacent, head_dim 128, theta 1e6 (Qwen2-like), pos 300",
                {"pos": 300, "head_dim": 128, "theta": 1e6, "style": "adjacent", "compare_with": "reference64"},
                {"x": randn(g, 256)}))
    out.append(("rotate_half, head_dim 64, theta 1e6, pos 32767 (Qwen2.5's context): float32 angle off by up to 1e-3 rad",
                {"pos": 32767, "head_dim": 64, "theta": 1e6, "style": "rotate_half", "compare_with": "reference64"},
                {"x": randn(g, 128)}))
    return out


# LONG_ANGLE_POS: the reference rounds the angle pos·freq to float32 (as Meta's LLaMA, llama2.c and
# transformers do); at pos 511 that rounding is up to ulp(511)/2 = 3e-5 rad, so PyTorch's q and k are
# off by up to 3e-5·|x| there, more than the float32 tolerance. lmlab computes the angle in float64.
# From pos 256 on (ulp(256)/2 = 1.5e-5 rad) RoPE cases are held to the float64 truth rounded to
# float32; the report still shows how much closer to it we are than PyTorch (ours/torch vs f64).
LONG_ANGLE_POS = 256


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
    # around the fast kernel's tile of 32 positions (attention_tiled): tile - 1, tile, tile + 1
    for n_pos, what in ((31, "one short of a tile"), (32, "exactly one tile"), (33, "a tile and one position")):
        out.append((f"{n_pos} cached positions, head_dim 64: {what} of the tiled kernel", {},
                    {"q": randn(g, 64), "k": randn(g, n_pos, 64), "v": randn(g, n_pos, 64)}))
    # masked keys: k = -inf·sign(q) makes q·k = -inf exactly (every term -|q_j|·inf, never inf - inf: q has
    # no zero entry), so softmax gives them weight 0 and the output ignores them
    q = randn(g, 64)
    assert bool((q != 0).all())
    k = randn(g, 40, 64)
    k[5] = -math.inf * torch.sign(q)
    out.append(("-inf masked key 5 of 40", {}, {"q": q, "k": k, "v": randn(g, 40, 64)}))
    q = randn(g, 64)
    assert bool((q != 0).all())
    k = randn(g, 45, 64)
    k[:32] = -math.inf * torch.sign(q)
    out.append(("first 32 keys masked: a whole tile of -inf, then 13 live keys", {}, {"q": q, "k": k, "v": randn(g, 45, 64)}))
    # the dominant key arrives in the second tile: the running max jumps by ~40 and the first tile's
    # partial sums are rescaled by ~exp(-40)
    q = randn(g, 64, scale=2.0)
    k = randn(g, 48, 64)
    k[40] = q * (40.0 * 8.0 / float(q.dot(q)))
    out.append(("peaked late: key 40 of 48 matches with score 40", {}, {"q": q, "k": k, "v": randn(g, 48, 64)}))
    return out


def cases_argmax(g):
    ties = torch.zeros(100)
    ties[[7, 42, 99]] = 5.0
    last = randn(g, 64)
    last[-1] = 100.0
    return [("16384 logits", {}, {"x": randn(g, 16384)}),
            ("ties: the first maximum wins", {}, {"x": ties}),
            ("maximum at the last index", {}, {"x": last})]


def cases_quantize_q8_0(g):
    d = 2.0 ** -149  # the smallest subnormal float32
    spread = torch.cat([randn(g, 32, scale=10.0 ** e) for e in range(-3, 4)] + [randn(g, 32)])  # 8 groups, 1e-3 .. 1e3
    ffn = randn(g, 1024, scale=2.0)
    ffn[1000] = 50.0  # an outlier in the last group coarsens only that group's scale
    return [("exact halves at scale 1 (max|x| = 127): C's round() gives 1, 2, 3, -1, -2, -3; torch.round 0, 2, 2, -0, -2, -2",
             {"group": 8}, {"x": torch.tensor([127.0, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, -126.5])}),
            ("exact halves at scales 2 (max 254) and 0.25 (max 31.75): 5/2, -3/2, 0.125/0.25, -0.375/0.25, 0.625/0.25",
             {"group": 4}, {"x": torch.tensor([254.0, 5.0, -3.0, 1.0, 31.75, 0.125, -0.375, 0.625])}),
            ("an all-zero group between two others: scale 0, q 0 (runq.c divides 0 by 0)", {"group": 16},
             {"x": torch.cat([randn(g, 16), torch.zeros(16), randn(g, 16)])}),
            ("1024 FFN activations ~N(0, 4), group 64, an outlier (50) in the last group", {"group": 64}, {"x": ffn}),
            ("8 groups of 32 with magnitudes 1e-3 .. 1e3: each group its own scale", {"group": 32}, {"x": spread}),
            ("subnormal groups: max 190·2^-149 (scale rounds down to 2^-149: q clamped to 127) and max 60·2^-149 "
             "(scale underflows to 0)", {"group": 2},
             {"x": (torch.tensor([190.0, -3.0, 60.0, 1.0], dtype=torch.float64) * d).float()}),
            ("group 1: every element its own scale (q = ±127 or 0)", {"group": 1}, {"x": torch.tensor([3.0, -0.001, 0.0, 7e5])})]


def cases_matvec_q8_0(g):
    """Quantized operands made from float ones by ref_q8.quantize_q8_0 (what the C++ forward feeds
    the kernel), stored as floats: Wq [out, in], Ws [out, in/group], xq [in], xs [in/group]."""
    def case(desc, W, x, group):
        Wq, Ws = ref_q8.quantize_q8_0(W, group)
        xq, xs = ref_q8.quantize_q8_0(x, group)
        return (desc, {"group": group}, {"Wq": Wq.float(), "Ws": Ws, "xq": xq.float(), "xs": xs})
    out = []
    for rows, cols, group, why in [(256, 256, 64, "wq/wk/wv/wo of the tiny LLaMA"), (1024, 256, 64, "w1/w3: dim -> ffn"),
                                   (256, 1024, 64, "w2: ffn -> dim, 16 groups per row"),
                                   (512, 256, 64, "classifier-like: many rows"),
                                   (16, 4096, 64, "64 groups per row accumulated in float, in order"),
                                   (64, 256, 32, "group 32")]:
        out.append(case(f"{rows}x{cols}, group {group}: {why}", randn(g, rows, cols, scale=cols ** -0.5), randn(g, cols), group))
    # every |q| near 127 and one group of 2048: int32 sums up to 127² · 2048 = 33M > 2^24, where
    # (float)ival rounds (as it does in runq.c)
    W = torch.where(torch.rand(8, 2048, generator=g) < 0.5, -1.0, 1.0) * (120 + 7 * torch.rand(8, 2048, generator=g))
    out.append(case("8x2048, group 2048: int32 group sums past 2^24 (the float conversion rounds)", W,
                    120 + 7 * torch.rand(2048, generator=g), 2048))
    # zero groups: x's second group and row 1's first group are all zeros (scale 0)
    W, x = randn(g, 4, 128, scale=128 ** -0.5), randn(g, 128)
    W[1, :32] = 0.0
    x[32:64] = 0.0
    out.append(case("4x128, group 32: a zero group in x and in row 1 of W (scale 0)", W, x, 32))
    return out


# ---- Writing ------------------------------------------------------------------------------------

def fixed_utf8(values):
    """Strings as fixed-length UTF-8 (NUL-padded to the longest), never variable-length: a damaged
    variable-length string lives in HDF5's global heap and can crash libhdf5 inside the read."""
    raw = [v.encode("utf-8") for v in values]
    return np.array(raw, dtype=h5py.string_dtype("utf-8", max([1] + [len(b) for b in raw])))


def write_attr(obj, key, value):
    if isinstance(value, str):
        a = fixed_utf8([value])
        obj.attrs.create(key, a[0], dtype=a.dtype)
    elif isinstance(value, bool):
        obj.attrs[key] = np.int64(value)
    elif isinstance(value, int):
        obj.attrs[key] = np.int64(value)
    elif isinstance(value, float):
        obj.attrs[key] = np.float64(value)
    elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        obj.attrs.create(key, fixed_utf8(value))
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


def open_fixture(out_dir, fixture, level, sha):
    """Creates out_dir/fixture; its root attribute "fixture" is that relative path (the harness checks it)."""
    path = os.path.join(out_dir, fixture)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fcpl = _ordered_untimed(h5py.h5p.create(h5py.h5p.FILE_CREATE))
    f = h5py.File(h5py.h5f.create(path.encode(), h5py.h5f.ACC_TRUNC, fcpl=fcpl))
    write_attr(f, "fixture", fixture)
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


def export_kernel(row, out_dir, sha):
    """kernel/<name>.h5: cases_<name>() run through ref_<name>() in float32 and float64."""
    name = os.path.basename(row["fixture"])[:-len(".h5")]
    cases_fn, ref_fn = globals()[f"cases_{name}"], globals()[f"ref_{name}"]
    g = generator("kernel." + name)
    with open_fixture(out_dir, row["fixture"], "kernel", sha) as f:
        for i, (desc, params, inputs) in enumerate(cases_fn(g)):
            inputs = {k: v.to(torch.float32).contiguous() for k, v in inputs.items()}
            outputs = ref_fn(inputs, params)
            reference64 = ref_fn({k: v.double() for k, v in inputs.items()}, params)
            write_case(f, i, desc, params, inputs, outputs, reference64)
    return [os.path.join(out_dir, row["fixture"])]


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


def write_model_file(out_dir, rel, model, sha, vocab=None):
    """Config as root attributes; every tensor under its PyTorch name, [out, in] as nn.Linear keeps it;
    the vocabulary (llama2.c convention: pieces with ' ' for U+2581, scores) under tokenizer/."""
    f = open_fixture(out_dir, rel, "model", sha)
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
            # the pieces as one byte buffer plus offsets, not variable-length strings: a damaged
            # vlen string can crash libhdf5 itself inside the read, where no check of ours runs
            raw = [p.encode("utf-8") for p in pieces]
            offsets = np.cumsum([0] + [len(b) for b in raw], dtype=np.int64)
            tg.create_dataset("piece_bytes", data=np.frombuffer(b"".join(raw), dtype=np.uint8), track_times=False)
            tg.create_dataset("piece_offsets", data=offsets, track_times=False)
            tg.create_dataset("scores", data=np.asarray(scores, dtype=np.float32), track_times=False)
    return os.path.join(out_dir, rel)


_MODEL_CACHE = {}


def default_model(out_dir, sha):
    """Builds the tiny LLaMA and writes its file once per export."""
    if "tiny" not in _MODEL_CACHE:
        text = tokenizer_ref.kjv_text()
        model_proto = tokenizer_ref.train_default_vocab(text, TINY_LLAMA["vocab_size"])
        vocab = tokenizer_ref.spm_vocab(model_proto)
        model = build_tiny_llama()
        path = write_model_file(out_dir, TINY_LLAMA_FILE, model, sha, vocab)
        write_llama_hf(model, os.path.join(out_dir, TINY_LLAMA_HF), default_prompt(model.cfg.vocab_size, 16, "model.tiny-llama"))
        _MODEL_CACHE["tiny"] = (model, path, model_proto, vocab, text)
    return _MODEL_CACHE["tiny"]


TINY_LLAMA_HF = "models/tiny-llama-hf"
STORIES_HF = "models/stories260k-hf"


def write_llama_hf(model, path, tokens):
    """Our LLaMA as a Hugging Face LlamaForCausalLM directory: wq/wk rows permuted as Meta-to-HF
    conversion does (adjacent-pair RoPE weights become rotate-half weights). transformers' own
    LlamaForCausalLM then runs it, and the export stops if its logits differ from llama_ref.py's
    (ref_hf_llama.cross_check_llama): our hand-written reference checked against one we did not write."""
    hf = ref_hf_llama.llama_to_hf(model)
    diff = ref_hf_llama.cross_check_llama(model, hf, tokens)
    print(f"export_golden: {os.path.relpath(path, os.path.dirname(os.path.dirname(path)))}: transformers' "
          f"LlamaForCausalLM agrees with llama_ref.py, max |logits diff| {diff:.3g}")
    ref_hf_llama.save_hf_dir(hf, path)


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
    return {name: rec[f"layer{layer}.{name}"] for name, _, _ in llama_ref.BLOCK_INTERMEDIATES}


# ---- Models -----------------------------------------------------------------------------------
# Each stage row names its model; these build (or read) it once per export and write its files.

def llama_model(key, out_dir, sha):
    """The reference LLaMA for a model key: our tiny LLaMA or a llama2.c checkpoint from ../shared,
    or their Hugging Face conversions (written with the model they come from)."""
    if key in (TINY_LLAMA_FILE, TINY_LLAMA_HF):
        return default_model(out_dir, sha)[0]
    if key in ("shared:" + STORIES_MODEL, STORIES_HF):
        if "stories" not in _MODEL_CACHE:
            model = llama_ref.load_llama2c(shared_path(STORIES_MODEL)).eval()
            write_llama_hf(model, os.path.join(out_dir, STORIES_HF), stories_prompt(16))
            _MODEL_CACHE["stories"] = model
        return _MODEL_CACHE["stories"]
    raise SystemExit(f"export_golden: no LLaMA model '{key}' (see llama_model())")


def qwen2_model(out_dir):
    """transformers' Qwen2ForCausalLM from a tiny config and a fixed seed (ref_hf_llama.py), saved
    with save_pretrained, with Qwen's real tokenizer files beside it when ../shared has them.
    Its float64 truth is llama_ref.py on the same weights (qwen2_ref64)."""
    if "qwen2" not in _MODEL_CACHE:
        model = ref_hf_llama.build_tiny_qwen2(generator("model.tiny-qwen2"))
        ref = ref_hf_llama.qwen2_to_llama_ref(model)
        diff, role, rel = ref_hf_llama.cross_check_qwen2(model, ref, default_prompt(QWEN_TOKENIZER_SIZE, 16, "model.tiny-qwen2"))
        print(f"export_golden: models/tiny-qwen2: transformers' Qwen2ForCausalLM agrees with llama_ref.py, max |logits "
              f"diff| {diff:.3g}, worst intermediate {role} {rel:.3g} (relative to max(1, max |{role}|))")
        _MODEL_CACHE["qwen2.ref64"] = ref.double()
        path = os.path.join(out_dir, "models", "tiny-qwen2")
        ref_hf_llama.save_hf_dir(model, path)
        for name in ("tokenizer.json", "tokenizer_config.json"):
            src = shared_path(os.path.join(os.path.dirname(QWEN_TOKENIZER), name))
            if os.path.exists(src):
                shutil.copyfile(src, os.path.join(path, name))  # generated data under golden/, never in git
        _MODEL_CACHE["qwen2"] = model
    return _MODEL_CACHE["qwen2"]


def qwen2_ref64():
    """The tiny Qwen2 as a float64 llama_ref.Llama (after qwen2_model): transformers' Qwen2 keeps
    RMSNorm, softmax and the RoPE tables in float32 even in a .double() copy."""
    return _MODEL_CACHE["qwen2.ref64"]


MOE_FAMILIES = ("qwen2moe", "mixtral")


def moe_model(family, key, out_dir):
    """transformers' Qwen2MoeForCausalLM / MixtralForCausalLM from a tiny config and a fixed seed
    (ref_hf_moe.py), saved with save_pretrained into `key` (models/tiny-<family>; "-tied": the same
    weights with two experts' router rows made equal, ref_hf_moe.TIED_LAYER). Its float64 truth is
    llama_ref.py's block with ref_hf_moe.MoeRef as feed-forward (moe_ref), checked against
    transformers in float32 first (ref_hf_moe.cross_check: the same experts, every role within 1e-5;
    not on the tied model, whose exact ties may be ordered either way: it is the checked model with
    one router row copied)."""
    if key not in _MODEL_CACHE:
        tied = key.endswith("-tied")
        model = ref_hf_moe.build(family, generator(f"model.tiny-{family}"), tied=tied)
        ref = ref_hf_moe.to_llama_ref(model)
        if not tied:
            role, rel, dl = ref_hf_moe.cross_check(model, ref, default_prompt(model.config.vocab_size, 16, f"model.tiny-{family}"))
            print(f"export_golden: {key}: transformers agrees with llama_ref + MoeRef, max |logits diff| "
                  f"{dl:.3g}, worst intermediate {role} {rel:.3g} (relative), the same experts everywhere")
        _MODEL_CACHE[key + ".ref"] = ref
        ref_hf_llama.save_hf_dir(model, os.path.join(out_dir, key))
        _MODEL_CACHE[key] = model
    return _MODEL_CACHE[key]


def moe_ref(key):
    """The float32 llama_ref + MoeRef copy of a tiny MoE model (after moe_model); run it in float64."""
    return _MODEL_CACHE[key + ".ref"]


GPT2_KEYS = ("models/tiny-gpt2", "models/tiny-gpt2-hub", "models/tiny-gpt2.llmc.bin")


def gpt2_model(out_dir):
    """transformers' GPT2LMHeadModel from a tiny config and a fixed seed, written once per export
    in the three layouts the C++ reads (ref_gpt2.save_hf_dirs), plus the real GPT-2 tokenizer as a
    Hugging Face tokenizer.json beside it when ../shared has the GPT-2 vocabulary."""
    if "gpt2" not in _MODEL_CACHE:
        model = ref_gpt2.build_tiny_gpt2(generator("model.tiny-gpt2"))
        paths = ref_gpt2.save_hf_dirs(model, os.path.join(out_dir, "models"))
        if os.path.exists(shared_path(GPT2_ENCODER)):
            tokenizer_bpe_ref.gpt2_hf(SHARED_DIR).save(os.path.join(paths["hf"], "tokenizer.json"))
            # llm.c's decode-only vocabulary beside its checkpoint, where `lmlab generate` looks for it
            with open(os.path.join(os.path.dirname(paths["llmc"]), "gpt2_tokenizer.bin"), "wb") as f:
                f.write(tokenizer_bpe_ref.llmc_tokenizer_bytes(SHARED_DIR))
        _MODEL_CACHE["gpt2"] = model
    return _MODEL_CACHE["gpt2"]


def model_for(row, out_dir, sha):
    """(family, reference model) of a stage row; None when its ../shared file is absent."""
    key = row["model"]
    needed = key[len("shared:"):] if key.startswith("shared:") else STORIES_MODEL if key == STORIES_HF else None
    if needed and not os.path.exists(shared_path(needed)):
        print(f"export_golden: {row['fixture']} skipped: {shared_path(needed)} not found")
        return None
    if row["family"] == "gpt2":
        return gpt2_model(out_dir)
    if row["family"] == "qwen2":
        return qwen2_model(out_dir)
    if row["family"] in MOE_FAMILIES:
        return moe_model(row["family"], key, out_dir)
    return llama_model(key, out_dir, sha)


# ---- Layers -------------------------------------------------------------------------------------

def export_layer(row, out_dir, sha):
    if "#" in row["model"]:  # int8 on load ("#q8_0"): the int8 reference
        return export_layer_q8(row, out_dir, sha)
    model = model_for(row, out_dir, sha)
    if row["family"] == "gpt2":
        return export_hf_layer(row, model, ref_gpt2, out_dir, sha)
    if row["family"] in MOE_FAMILIES:
        return export_moe_layer(row, model, out_dir, sha)
    if row["family"] == "qwen2":
        ref64 = qwen2_ref64()
        return export_hf_layer(row, model, ref_hf_llama, out_dir, sha,
                               lambda *case: ref_hf_llama.qwen2_layer_case64(ref64, *case))
    return export_llama_layer(row, model, out_dir, sha)


def export_llama_layer(row, model, out_dir, sha):
    model64 = as64(model)
    part = os.path.basename(row["fixture"])[:-len(".h5")]  # attention, ffn, block
    c = model.cfg
    g = generator("layer." + part)
    if part == "attention":
        points = [(0, 0, "position 0: empty cache"), (1, 1, "position 1"), (0, 17, "typical position"),
                  (1, c.max_seq_len - 2, "near max_seq_len: 510 cached positions")]
    elif part == "ffn":
        points = [(0, 0, "layer 0"), (1, 0, "layer 1")]
    else:
        points = [(0, 0, "layer 0 at position 0"), (1, 5, "layer 1 at position 5 with 5 cached positions")]
    with open_fixture(out_dir, row["fixture"], "layer", sha) as f:
        write_attr(f, "model", row["model"])
        for i, (layer, pos, why) in enumerate(points):
            x = randn(g, c.dim)
            ck, cv = randn(g, pos, c.kv_dim), randn(g, pos, c.kv_dim)
            inputs = {"x": x} if part == "ffn" else {"x": x, "cache_k": ck, "cache_v": cv}
            params = {"layer": layer} if part == "ffn" else {"layer": layer, "pos": pos}
            if part == "attention" and pos >= LONG_ANGLE_POS:  # q and k are RoPE'd at pos
                params["compare_with"] = "reference64"
            write_case(f, i, why, params, inputs, layer_case(model, layer, pos, x, ck, cv, part),
                       layer_case(model64, layer, pos, x, ck, cv, part))
    return [os.path.join(out_dir, row["fixture"])]


def export_hf_layer(row, model, ref, out_dir, sha, case64=None):
    """One block of a transformers model (GPT2Block with its layer_past, Qwen2DecoderLayer with a
    DynamicCache and the model's rotary embedding) at several positions; ref is its reference module.
    case64(layer, pos, x, cache_k, cache_v): reference64 (default: ref.layer_case on ref.to_float64(model))."""
    if case64 is None:
        model64 = ref.to_float64(model)
        case64 = lambda layer, pos, x, ck, cv: ref.layer_case(model64, layer, pos, x.double(), ck.double(), cv.double())  # noqa: E731
    c = model.config
    dim = c.hidden_size
    kv_dim = dim // c.num_attention_heads * getattr(c, "num_key_value_heads", c.num_attention_heads)
    g = generator(row["id"])
    n_pos = c.max_position_embeddings
    points = [(0, 0, "layer 0 at position 0: empty cache"), (1, 1, "layer 1 at position 1"),
              (0, 17, "layer 0 at a typical position"), (1, n_pos - 2, f"layer 1 near the end of the context: {n_pos - 2} cached")]
    with open_fixture(out_dir, row["fixture"], "layer", sha) as f:
        write_attr(f, "model", row["model"])
        for i, (layer, pos, why) in enumerate(points):
            x = randn(g, dim)
            ck, cv = randn(g, pos, kv_dim), randn(g, pos, kv_dim)
            write_case(f, i, why, {"layer": layer, "pos": pos}, {"x": x, "cache_k": ck, "cache_v": cv},
                       ref.layer_case(model, layer, pos, x, ck, cv), case64(layer, pos, x, ck, cv))
    return [os.path.join(out_dir, row["fixture"])]


def export_moe_layer(row, model, out_dir, sha):
    """The sparse MoE block of one layer (transformers' Qwen2MoeSparseMoeBlock / MixtralSparseMoeBlock)
    on the normalised inputs it sees inside the model: each layer's ffn_norm at every position of a
    16-token prompt, as one [T, hidden] batch. Outputs: router_logits, experts (ids [T, k], largest
    probability first), expert_weights, shared_out (Qwen2-MoE), out; reference64 from MoeRef in float64."""
    tokens = default_prompt(model.config.vocab_size, 16, row["id"])
    hf = ref_hf_moe.forward_intermediates(model, tokens)
    k = model.config.num_experts_per_tok
    with open_fixture(out_dir, row["fixture"], "layer", sha) as f:
        write_attr(f, "model", row["model"])
        for layer in range(model.config.num_hidden_layers):
            x = hf[f"layer{layer}.ffn_norm"]
            out32 = ref_hf_moe.block_case(model, layer, x)
            out64 = ref_hf_moe.ref_block(moe_ref(row["model"]), layer, x)
            gap = float(ref_hf_moe.routing_gaps(out32["router_logits"], k).min())
            write_case(f, layer, f"layer {layer}'s experts on its normalised inputs at {len(tokens)} positions "
                       f"(smallest k-th/(k+1)-th router logit gap {gap:.3g})", {"layer": layer}, {"x": x}, out32, out64)
    return [os.path.join(out_dir, row["fixture"])]


# ---- Whole model ----------------------------------------------------------------------------------

def forward_outputs(model, tokens):
    """Every intermediate of a token-by-token run, stacked over positions, in pipeline order."""
    values, cache = llama_ref.run_tokens(model, tokens, next(model.parameters()).dtype)
    out = {}
    for i in range(model.cfg.n_layers):
        out[f"layer{i}.in"] = values[f"layer{i}.in"]
        for name, _, _ in llama_ref.BLOCK_INTERMEDIATES:
            out[f"layer{i}.{name}"] = values[f"layer{i}.{name}"]
    out["final_norm"] = values["final_norm"]
    out["logits"] = values["logits"]
    n = len(tokens)
    return out, {"cache_k": cache[0][:, :n], "cache_v": cache[1][:, :n]}


def default_prompt(vocab_size, n, stage_id):
    g = generator(stage_id + ".prompt")
    return torch.randint(3, vocab_size, (n,), generator=g)


def gpt2_forward_outputs(model, tokens):
    """transformers' full-sequence forward: every role named as the C++ names it, and the cache."""
    roles, cache_k, cache_v = ref_gpt2.forward_intermediates(model, tokens)
    roles.pop("embed", None)  # equals layer0.in
    return roles, {"cache_k": cache_k, "cache_v": cache_v}


def export_model(row, out_dir, sha):
    if "#" in row["model"]:  # int8 on load ("#q8_0"): the int8 reference
        return export_model_q8(row, out_dir, sha)
    if row["model"] == TINY_LLAMA_AK42:  # llama2.c's own int8 file
        return export_model_ak42(row, out_dir, sha)
    model = model_for(row, out_dir, sha)
    if model is None:
        return []
    kind = "kv_cache" if "kv_cache" in row["fixture"] else "forward"
    if row["family"] == "gpt2":
        tokens = default_prompt(model.config.vocab_size, 16, "model.tiny-gpt2")
        out32, cache32 = gpt2_forward_outputs(model, tokens)
        out64, cache64 = gpt2_forward_outputs(ref_gpt2.to_float64(model), tokens)
    elif row["family"] in MOE_FAMILIES:
        tokens = default_prompt(model.config.vocab_size, 16, f"model.tiny-{row['family']}")
        out32 = ref_hf_moe.forward_intermediates(model, tokens)
        out64 = ref_hf_moe.ref_forward(moe_ref(row["model"]), tokens)  # llama_ref + MoeRef in float64
        out64 = {key: out64[key] for key in out32}
        cache32 = cache64 = None  # (no kv_cache fixture for these families)
    elif row["family"] == "qwen2":
        # 8 tokens (ids of the real tokenizer, not the padding rows): logits of a 151936-token
        # vocabulary at every position cost 1.2 MB per token in float32 + float64
        tokens = default_prompt(QWEN_TOKENIZER_SIZE, 8, "model.tiny-qwen2")
        out32, k32, v32 = ref_hf_llama.forward_intermediates(model, tokens)
        out64, k64, v64 = ref_hf_llama.qwen2_forward64(qwen2_ref64(), tokens)  # llama_ref in float64
        cache32, cache64 = {"cache_k": k32, "cache_v": v32}, {"cache_k": k64, "cache_v": v64}
    else:
        n = 16
        tokens = (stories_prompt(n) if row["model"].startswith("shared:")
                  else default_prompt(model.cfg.vocab_size, n, "model.tiny-llama"))
        out32, cache32 = forward_outputs(model, tokens)
        out64, cache64 = forward_outputs(as64(model), tokens)
    with open_fixture(out_dir, row["fixture"], "model", sha) as f:
        write_attr(f, "model", row["model"])
        if kind == "forward":
            write_case(f, 0, f"{len(tokens)}-token prompt, every intermediate at every position", {}, {"tokens": tokens},
                       out32, out64)
        else:
            write_case(f, 0, f"keys and values cached after a {len(tokens)}-token prompt", {}, {"tokens": tokens},
                       cache32, cache64)
    return [os.path.join(out_dir, row["fixture"])]


# ---- Generation ------------------------------------------------------------------------------------

def generation_outputs(model, prompt, n_new):
    """Greedy tokens (float32 model) and the logits at every step; reference64's logits come from the
    float64 model fed the same token sequence, so they stay comparable even after a near-tie."""
    tokens, logits32 = llama_ref.greedy(model, prompt, n_new)
    seq = torch.cat([prompt, torch.tensor(tokens[:-1], dtype=prompt.dtype)])
    values64, _ = llama_ref.run_tokens(as64(model), seq, torch.float64)
    logits64 = values64["logits"][len(prompt) - 1:]
    return tokens, logits32, logits64


def export_generation(row, out_dir, sha):
    if row["fixture"].startswith("quant/"):  # the cost of int8: held-out text, no reference outputs but one
        return export_quant_cost(row, out_dir, sha)
    if row["fixture"].startswith("serve/"):  # continuous batching: many requests, each run alone here
        return export_serve(row, out_dir, sha)
    model = model_for(row, out_dir, sha)
    if model is None:
        return []
    if row["family"] in ("gpt2", "qwen2") + MOE_FAMILIES:
        prompt = default_prompt(prompt_vocab(row, model), 8, f"generation.tiny-{row['family']}")
        n_new = 48 if row["family"] in MOE_FAMILIES else 64  # (the tiny MoE models' context is 64)
        why = f"{n_new} greedy tokens after an 8-token prompt (transformers' generate, do_sample=False)"
        tokens, logits32, logits64 = greedy_reference(row, model, prompt, n_new)
    elif row["model"].startswith("shared:"):
        prompt, n_new, why = torch.tensor([1]), 256, "256 greedy tokens from BOS"
        tokens, logits32, logits64 = generation_outputs(model, prompt, n_new)
    else:
        prompt = default_prompt(model.cfg.vocab_size, 8, "generation.tiny-llama")
        n_new, why = 64, "64 greedy tokens after an 8-token prompt"
        tokens, logits32, logits64 = generation_outputs(model, prompt, n_new)
    with open_fixture(out_dir, row["fixture"], "generation", sha) as f:
        write_attr(f, "model", row["model"])
        full, top = generation_logits(logits32, logits64)
        write_case(f, 0, why, {"max_new_tokens": n_new}, {"prompt": prompt, "full_steps": full["steps"]},
                   {"tokens": torch.tensor(tokens, dtype=torch.float32), "logits": full["logits32"],
                    "topk_ids": top["ids"], "topk_logits": top["logits32"]},
                   {"logits": full["logits64"], "topk_logits": top["logits64"]})
    return [os.path.join(out_dir, row["fixture"])]


def prompt_vocab(row, model):
    """The ids a random prompt may use: the model's vocabulary (Qwen2's: the tokenizer's 151665 of
    its 151936 embedding rows)."""
    if row["family"] == "qwen2":
        return QWEN_TOKENIZER_SIZE
    return model.config.vocab_size if row["family"] in ("gpt2",) + MOE_FAMILIES else model.cfg.vocab_size


def greedy_reference(row, model, prompt, n_new):
    """(tokens, logits32 [n_new, V], logits64 [n_new, V]) of n_new greedy tokens after prompt, from the
    family's reference: transformers' generate() for GPT-2, Qwen2, Qwen2-MoE and Mixtral (float64
    logits teacher-forced on the same tokens; for the MoE models by llama_ref + MoeRef, as their model
    stages), llama_ref.greedy for LLaMA."""
    if row["family"] in MOE_FAMILIES:
        tokens, logits32 = ref_hf_llama.greedy(model, prompt, n_new)
        seq = torch.cat([prompt, torch.tensor(tokens[:-1], dtype=prompt.dtype)])
        logits64 = ref_hf_moe.ref_forward(moe_ref(row["model"]), seq)["logits"][len(prompt) - 1:]
        assert logits64.shape == logits32.shape, (logits64.shape, logits32.shape)
        return tokens, logits32, logits64
    if row["family"] == "gpt2":
        tokens, logits32 = ref_gpt2.greedy(model, prompt, n_new)
        seq = torch.cat([prompt, torch.tensor(tokens)])
        return tokens, logits32, ref_gpt2.teacher_forced_logits64(model, seq, len(prompt))
    if row["family"] == "qwen2":
        tokens, logits32 = ref_hf_llama.greedy(model, prompt, n_new)
        seq = torch.cat([prompt, torch.tensor(tokens)])
        return tokens, logits32, ref_hf_llama.qwen2_logits64(qwen2_ref64(), seq, len(prompt))
    return generation_outputs(model, prompt, n_new)


GEN_TOP_K = 16  # logits kept at every step: the reference's top 16 (ids and values)


def generation_logits(logits32, logits64):
    """What a generation fixture keeps of the [n_new, vocab] logits, so that a 151936-token
    vocabulary stays small: the full rows at three steps (first, middle, last) and, at every step,
    the reference's top-16 ids with their float32 and float64 values. The harness compares its own
    logits at those ids; the top-1/top-2 gap is what decides a near-tie."""
    n = logits32.shape[0]
    steps = sorted({0, n // 2, n - 1})
    top = torch.topk(logits32, min(GEN_TOP_K, logits32.shape[1]), dim=-1)
    full = {"steps": torch.tensor(steps, dtype=torch.float32), "logits32": logits32[steps], "logits64": logits64[steps]}
    return full, {"ids": top.indices.to(torch.float32), "logits32": top.values,
                  "logits64": torch.gather(logits64, 1, top.indices)}


# ---- Serving: continuous batching -------------------------------------------------------------------
# 10 requests with different prompt lengths, token budgets and arrival steps. The reference runs each
# ALONE (greedy_reference: llama_ref token by token, transformers' generate() for GPT-2 and Qwen2): the harness serves them all together with its scheduler
# (chunked prefill, paged KV cache) and must get every request's tokens exactly and its logits within
# the logits tolerance. Scheduling may change when a token is computed, never what it is.
SERVE_PROMPT_LENGTHS = [3, 17, 1, 9, 30, 5, 12, 24, 2, 7]
SERVE_MAX_NEW = [12, 6, 20, 9, 4, 16, 10, 5, 14, 8]
SERVE_ARRIVALS = [0, 0, 1, 3, 3, 4, 8, 9, 15, 15]
# Two schedules of the same requests (case attributes the harness reads): a chunk that splits most
# prompts with pages of 16 and at most 4 running; then chunks of 3, pages of 5 (tiles straddle pages)
# and a pool of 12 pages that makes newcomers wait for room.
SERVE_SCHEDULES = [dict(chunk=7, page_size=16, max_running=4, n_pages=0),
                   dict(chunk=3, page_size=5, max_running=10, n_pages=12)]


def export_serve(row, out_dir, sha):
    model = model_for(row, out_dir, sha)
    if model is None:
        return []
    g = generator(row["id"] + ".prompts")
    vocab = prompt_vocab(row, model)
    bos = [1] if row["family"] == "llama" else []  # LLaMA prompts start with BOS; GPT-2 and Qwen2 have none
    prompts = [torch.cat([torch.tensor(bos, dtype=torch.long), torch.randint(3, vocab, (n - len(bos),), generator=g)])
               for n in SERVE_PROMPT_LENGTHS]
    tokens, logits32, logits64 = [], [], []
    for prompt, n_new in zip(prompts, SERVE_MAX_NEW):
        t, l32, l64 = greedy_reference(row, model, prompt, n_new)
        tokens += t
        logits32.append(l32)
        logits64.append(l64)
    logits32, logits64 = torch.cat(logits32), torch.cat(logits64)
    top = torch.topk(logits32, GEN_TOP_K, dim=-1)
    with open_fixture(out_dir, row["fixture"], "generation", sha) as f:
        write_attr(f, "model", row["model"])
        for i, sched in enumerate(SERVE_SCHEDULES):
            desc = (f"{len(prompts)} requests, each generated alone by the reference; served together with chunk "
                    f"{sched['chunk']}, pages of {sched['page_size']}, at most {sched['max_running']} running" +
                    (f", a pool of {sched['n_pages']} pages" if sched["n_pages"] else ""))
            write_case(f, i, desc, sched,
                       {"prompt_tokens": torch.cat(prompts), "prompt_lengths": torch.tensor(SERVE_PROMPT_LENGTHS),
                        "max_new_tokens": torch.tensor(SERVE_MAX_NEW), "arrival_steps": torch.tensor(SERVE_ARRIVALS)},
                       {"tokens": torch.tensor(tokens, dtype=torch.float32), "topk_ids": top.indices.to(torch.float32),
                        "topk_logits": top.values},
                       {"topk_logits": torch.gather(logits64, 1, top.indices)})
    return [os.path.join(out_dir, row["fixture"])]


# ---- int8 (Q8_0, llama2.c's runq.c) -----------------------------------------------------------------
# A stage row asks for int8 on load with a model suffix: "models/tiny-llama.h5#q8_0" (group 64) or
# "...#q8_0,group=N" (the C++ twin: parse_model_spec in harness/stages.cpp). The reference is
# ref_q8.py: llama_ref's model with runq.c's arithmetic in every Linear and the classifier.

TINY_LLAMA_AK42 = "models/tiny-llama.q8_0.bin"  # llama2.c's int8 file of the tiny LLaMA
HELD_OUT_TOKENS = 384  # of the held-out text (BOS included); the tiny LLaMA's context is 512


def split_q8(key):
    """'models/tiny-llama.h5#q8_0,group=4' -> ('models/tiny-llama.h5', 4); '...#q8_0' -> group 64."""
    if "#" not in key:
        return key, None
    base, suffix = key.split("#", 1)
    if suffix == "q8_0":
        return base, 64
    if suffix.startswith("q8_0,group=") and suffix[len("q8_0,group="):].isdigit():
        return base, int(suffix[len("q8_0,group="):])
    raise SystemExit(f"export_golden: model '{key}': unknown suffix (known: #q8_0, #q8_0,group=N)")


def export_model_q8(row, out_dir, sha):
    """The tiny LLaMA as lmlab's quantize_model makes it (every weight and activation rounded with
    C's round(), as runq.c's quantize()), run by ref_q8.py on model.forward's 16-token prompt: every
    intermediate, as model/forward.h5. No reference64: a float64 run would round activations to
    different integers, so it is not the truth of this computation."""
    base, group = split_q8(row["model"])
    model = llama_model(base, out_dir, sha)
    tokens = default_prompt(model.cfg.vocab_size, 16, "model.tiny-llama")
    out32, _ = forward_outputs(ref_q8.to_q8(model, group), tokens)
    with open_fixture(out_dir, row["fixture"], "model", sha) as f:
        write_attr(f, "model", row["model"])
        write_case(f, 0, f"{len(tokens)}-token prompt through the int8 model (Q8_0, group {group}), every intermediate "
                   "at every position", {"group": group}, {"tokens": tokens}, out32, {})
    return [os.path.join(out_dir, row["fixture"])]


def export_layer_q8(row, out_dir, sha):
    """layer/block_q8_0.h5: one int8 block of the tiny LLaMA (ref_q8.py) at layer 0 position 0 and
    layer 1 position 5 (5 cached positions), every intermediate, as layer/block.h5. No reference64."""
    base, group = split_q8(row["model"])
    model = ref_q8.to_q8(llama_model(base, out_dir, sha), group)
    c = model.cfg
    g = generator(row["id"])
    with open_fixture(out_dir, row["fixture"], "layer", sha) as f:
        write_attr(f, "model", row["model"])
        for i, (layer, pos, why) in enumerate([(0, 0, "layer 0 at position 0"),
                                               (1, 5, "layer 1 at position 5 with 5 cached positions")]):
            x = randn(g, c.dim)
            ck, cv = randn(g, pos, c.kv_dim), randn(g, pos, c.kv_dim)
            write_case(f, i, f"{why}, int8 (Q8_0, group {group})", {"layer": layer, "pos": pos},
                       {"x": x, "cache_k": ck, "cache_v": cv}, layer_case(model, layer, pos, x, ck, cv, "block"), {})
    return [os.path.join(out_dir, row["fixture"])]


def export_model_ak42(row, out_dir, sha):
    """llama2.c's int8 file of the tiny LLaMA, written as its export.py version2_export writes it
    (ref_q8.write_version2: weights rounded with torch.round), and the reference for it: ref_q8.py
    with export.py's weights and runq.c's run-time quantization. The case records the float file
    and how many weights sit on an exact half (where torch.round and C's round() disagree), so the
    harness can check the file against quantize_model of the float file."""
    model = default_model(out_dir, sha)[0]
    path = os.path.join(out_dir, row["model"])
    group, max_err = ref_q8.write_version2(model, path, 64)
    halves = ref_q8.round_half_differences(model, group)
    print(f"export_golden: {row['model']}: llama2.c version 2, group {group}, max quantization error {max_err:.3g}, "
          f"{halves} weights on an exact half (torch.round and C's round() disagree there)")
    tokens = default_prompt(model.cfg.vocab_size, 16, "model.tiny-llama")
    out32, _ = forward_outputs(ref_q8.to_q8(model, group, rounding=torch.round), tokens)
    with open_fixture(out_dir, row["fixture"], "model", sha) as f:
        write_attr(f, "model", row["model"])
        write_case(f, 0, f"{len(tokens)}-token prompt through llama2.c's int8 file (export.py's torch.round weights), "
                   "every intermediate at every position",
                   {"group": group, "float_model": TINY_LLAMA_FILE, "round_half_differences": halves},
                   {"tokens": tokens}, out32, {})
    return [os.path.join(out_dir, row["fixture"])]


# stories260K's held-out text: a TinyStories-like paragraph written here (not from its training set)
STORIES_HELD_OUT = (
    "One day, a little boy named Tom went to the park with his mom. The sun was warm and the sky was blue. "
    "Tom saw a big red ball under a tree. He ran to the ball and kicked it. The ball went up, up, up and "
    "landed in the pond. Tom was sad. He did not know how to get his ball back. A kind duck swam to the "
    "ball and pushed it to the side of the pond with its beak. Tom picked up the ball and smiled. \"Thank "
    "you, duck!\" he said. The duck said, \"Quack!\" Tom and his mom gave the duck some bread. Then they "
    "went home, and Tom told his dad about his new friend.")


def kjv_chapter(text, book, chapter):
    start = text.index(f"\n{book} {chapter}\n") + 1
    return text[start:text.index(f"\n{book} {chapter + 1}\n")]


def export_quant_cost(row, out_dir, sha):
    """quant/cost_<model>.h5: the held-out text the harness feeds the float and the int8 model
    (the tiny LLaMA: Ecclesiastes 3 of the KJV text, the first 384 ids; stories260K: the paragraph
    above), the greedy prompt, and PyTorch's perplexity of the float model on that text (the one
    output: it checks the harness's perplexity; everything else the harness measures)."""
    base, group = split_q8(row["model"])
    if base.startswith("shared:") and not os.path.exists(shared_path(base[len("shared:"):])):
        print(f"export_golden: {row['fixture']} skipped: {shared_path(base[len('shared:'):])} not found")
        return []
    model = llama_model(base, out_dir, sha)
    if base == TINY_LLAMA_FILE:
        _, _, proto, _, text = default_model(out_dir, sha)
        ids = ([1] + tokenizer_ref.spm_encode(proto, [kjv_chapter(text, "Ecclesiastes", 3)])[0])[:HELD_OUT_TOKENS]
        prompt, what = ids[:8], f"Ecclesiastes 3 (KJV), first {HELD_OUT_TOKENS} ids; greedy from its first 8"
    else:
        proto = tokenizer_ref.spm_from_llama2c(*read_llama2c_vocab(shared_path(STORIES_TOKENIZER), 512))
        ids = [1] + tokenizer_ref.spm_encode(proto, [STORIES_HELD_OUT])[0]
        prompt, what = [1], "a TinyStories-like paragraph written in the exporter; greedy from BOS"
    tokens = torch.tensor(ids)
    values, _ = llama_ref.run_tokens(model, tokens, torch.float32)
    logp = torch.log_softmax(values["logits"][:-1].double(), dim=-1)  # float32 logits, log-softmax in double
    ppl = math.exp(float(-logp.gather(1, tokens[1:, None]).mean()))
    with open_fixture(out_dir, row["fixture"], "generation", sha) as f:
        write_attr(f, "model", row["model"])
        write_case(f, 0, f"{len(ids)} held-out tokens: {what}", {"max_new_tokens": 256, "group": group},
                   {"tokens": tokens, "prompt": torch.tensor(prompt)}, {"ppl_float": torch.tensor([ppl])}, {})
    return [os.path.join(out_dir, row["fixture"])]


# ---- Real checkpoints and tokenizers from ../shared -------------------------------------------------
# Stages that need ../shared are exported only when it is present; the harness skips them otherwise.

SHARED_DIR = default_shared_dir()  # --shared overrides

STORIES_MODEL = "models/stories260K/stories260K.bin"
STORIES_TOKENIZER = "models/stories260K/tok512.bin"
LLAMA2_TOKENIZER = "tokenizers/llama2/tokenizer.bin"
LLAMA2_SPM_MODEL = "tokenizers/llama2/tokenizer.model"
GPT2_ENCODER = "tokenizers/gpt2/encoder.json"
GPT2_MERGES = "tokenizers/gpt2/vocab.bpe"
QWEN_TOKENIZER = "tokenizers/qwen/tokenizer.json"
QWEN_TOKENIZER_SIZE = 151665  # ids of Qwen's tokenizer; the model's embedding is padded to 151936 rows
SHARED_FILES = sorted([STORIES_MODEL, STORIES_TOKENIZER, LLAMA2_TOKENIZER, LLAMA2_SPM_MODEL, GPT2_ENCODER,
                       GPT2_MERGES, QWEN_TOKENIZER])  # presence is in the manifest


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


# ---- Tokenizers ------------------------------------------------------------------------------------

def tokenizer_reference(row, out_dir, sha):
    """(texts, ids, vocab_size) for a tokenizer stage from its reference: SentencePiece for the
    llama2.c-style vocabularies, tiktoken and HF tokenizers (which must agree) for GPT-2's.
    None when the ../shared file it needs is absent."""
    key = row["model"]
    _, _, default_proto, _, text = default_model(out_dir, sha)
    needed = {"shared:" + LLAMA2_TOKENIZER: LLAMA2_SPM_MODEL, "shared:" + STORIES_TOKENIZER: STORIES_TOKENIZER,
              "shared:tokenizers/gpt2": GPT2_ENCODER, "shared:" + QWEN_TOKENIZER: QWEN_TOKENIZER}.get(key)
    if needed and not os.path.exists(shared_path(needed)):
        print(f"export_golden: {row['fixture']} skipped: {shared_path(needed)} not found")
        return None
    if key == TINY_LLAMA_FILE:
        texts = tokenizer_ref.tokenizer_cases(text)
        return texts, tokenizer_ref.spm_encode(default_proto, texts), TINY_LLAMA["vocab_size"]
    if key == "shared:" + LLAMA2_TOKENIZER:
        with open(shared_path(LLAMA2_SPM_MODEL), "rb") as f:
            proto = f.read()
        texts = tokenizer_ref.tokenizer_cases(text)
        return texts, tokenizer_ref.spm_encode(proto, texts), 32000
    if key == "shared:" + STORIES_TOKENIZER:
        proto = tokenizer_ref.spm_from_llama2c(*read_llama2c_vocab(shared_path(STORIES_TOKENIZER), 512))
        texts = tokenizer_ref.tokenizer_cases(text)
        return texts, tokenizer_ref.spm_encode(proto, texts), 512
    if key == "shared:tokenizers/gpt2":
        texts = tokenizer_bpe_ref.gpt2_texts(text)
        return texts, tokenizer_bpe_ref.gpt2_reference_ids(texts, SHARED_DIR), 50257
    if key == "shared:" + QWEN_TOKENIZER:
        texts = tokenizer_bpe_ref.qwen_texts(text)
        return texts, tokenizer_bpe_ref.qwen_reference_ids(texts, SHARED_DIR, allow_special=True), 151665
    raise SystemExit(f"export_golden: no tokenizer reference for '{key}' (see tokenizer_reference())")


def export_tokenizer(row, out_dir, sha):
    """(text -> ids) pairs from the reference tokenizer, for every vocabulary the project uses."""
    ref = tokenizer_reference(row, out_dir, sha)
    if ref is None:
        return []
    texts, ids, vocab_size = ref
    with open_fixture(out_dir, row["fixture"], "tokenizer", sha) as f:
        write_attr(f, "tokenizer", row["model"])
        write_attr(f, "vocab_size", vocab_size)
        # Qwen's reference (HF tokenizers' default) recognises added tokens such as <|im_start|> in
        # the text; GPT-2's fixtures hold "<|endoftext|>" as plain text
        write_attr(f, "allow_special", int(row["model"] == "shared:" + QWEN_TOKENIZER))
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
    return [os.path.join(out_dir, row["fixture"])]


# How each level's fixtures are made (kinds of stage, not stages: the stages come from lmlab).
EXPORTERS = {"kernel": export_kernel, "layer": export_layer, "model": export_model,
             "generation": export_generation, "tokenizer": export_tokenizer}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(REPO_DIR, "golden"), help="output folder (default: golden/)")
    ap.add_argument("--shared", default=None, help="folder with models/ and tokenizers/ (default: $LMLAB_SHARED or ../shared)")
    ap.add_argument("--only", default="*", help="export only stages matching this glob (manifest still lists all files present)")
    ap.add_argument("--lmlab", default=default_lmlab(), help="the lmlab binary whose stage table to export (default: build/default/lmlab)")
    args = ap.parse_args()

    global SHARED_DIR
    if args.shared:
        SHARED_DIR = args.shared
    torch.set_num_threads(1)  # deterministic reductions
    torch.use_deterministic_algorithms(True)
    sha = exporter_sha256()
    table = stage_table_json(args.lmlab)
    rows = json.loads(table)["stages"]
    t0 = time.perf_counter()
    fixtures = {}  # fixture -> the first stage row that uses it (stages may share a fixture)
    for row in rows:
        if fnmatch.fnmatch(row["id"], args.only):
            fixtures.setdefault(row["fixture"], row)
    written = []
    for fixture, row in fixtures.items():
        t = time.perf_counter()
        written.extend(EXPORTERS[row["level"]](row, args.out, sha))
        print(f"export_golden: {fixture:<34} {time.perf_counter() - t:5.2f} s")

    # the manifest lists every fixture present under out/, so a partial (--only) export keeps it whole
    # (the model files too: safetensors, llm.c files, tokenizer files; not the committed README.md)
    files = {}
    for root, _, names in os.walk(args.out):
        for name in sorted(names):
            rel = os.path.relpath(os.path.join(root, name), args.out)
            if rel not in ("manifest.json", "README.md"):
                files[rel] = sha256_file(os.path.join(root, name))
    manifest = {"format_version": FORMAT_VERSION, "exporter_sha256": sha, "stages_sha256": hashlib.sha256(table).hexdigest(),
                "torch_version": torch.__version__, "seed": SEED, "files": dict(sorted(files.items())),
                # which ../shared files are there: golden_status.py re-exports when that changes
                "shared_files": {rel: os.path.exists(os.path.join(SHARED_DIR, rel)) for rel in SHARED_FILES}}
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    print(f"export_golden: wrote {len(written)} fixture files to {args.out} in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
