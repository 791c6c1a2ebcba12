"""The kernels' references: PyTorch built-ins (and runq.c's int8 arithmetic, q8.py), and their
cases, chosen to break kernels, not to pass them. KERNELS maps each kernel's name to (its cases, its
reference op); the recipe kernel.<name> writes kernel/<name>.h5 (export).

A reference op takes the case's inputs (float32 or float64: the same code computes outputs and
reference64) and its parameters, and returns a dict of named outputs. A case is (description,
params, inputs).
"""
import math

import torch
import torch.nn.functional as F

from lmlab_ref import common, fixtures, ggml_quants, q8
from lmlab_ref.common import randn
from lmlab_ref.llama_ref import apply_rope, rope_frequencies

# ---- Reference ops ------------------------------------------------------------------------------

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


def ref_sigmoid(inp, p):
    return {"y": torch.sigmoid(inp["x"])}


def ref_swiglu(inp, p):
    return {"y": F.silu(inp["a"]) * inp["b"]}


def ref_attention(inp, p):
    # one query over n_pos cached keys/values: softmax(K q / sqrt(d)) . V
    q, k, v = inp["q"], inp["k"], inp["v"]
    scores = torch.matmul(k, q) / math.sqrt(q.shape[-1])
    probs = F.softmax(scores, dim=-1)
    return {"out": torch.matmul(probs, v), "probs": probs}


def ref_attention_window(inp, p):
    # a sliding window as transformers applies it: the scores of positions before `first` masked with
    # -inf (eager attention's additive mask), then the same softmax and weighted sum over all n_pos;
    # probs: [n_pos], exactly 0 at the masked positions. (The kernel reads only first .. n_pos - 1,
    # from a ring buffer the stage fills: the fixture holds every position in order.)
    q, k, v = inp["q"], inp["k"], inp["v"]
    scores = torch.matmul(k, q) / math.sqrt(q.shape[-1])
    scores[: p["first"]] = -math.inf
    probs = F.softmax(scores, dim=-1)
    return {"out": torch.matmul(probs, v), "probs": probs}


def _rotary_module(p):
    """transformers' own LlamaRotaryEmbedding (4.46.3; Qwen2's is a copy) for a case's RoPE: the
    config fields its rope init functions read."""
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding
    cfg = LlamaConfig(hidden_size=p["head_dim"] * 4, num_attention_heads=4, num_key_value_heads=4,
                      rope_theta=p["theta"], max_position_embeddings=p["context"], rope_scaling=_scaling(p))
    return LlamaRotaryEmbedding(config=cfg)


def _scaling(p):
    """A case's rope_scaling dict (config.json's) from its attributes."""
    sc = {"rope_type": p["kind"], "factor": p["factor"]}
    for key in ("low_freq_factor", "high_freq_factor", "original_max_position_embeddings", "beta_fast", "beta_slow",
                "attention_factor"):
        if key in p:
            sc[key] = p[key]
    return sc


def ref_rope_scaling(inp, p):
    """float32: transformers' rotary module itself: its inv_freq and attention_scaling after a forward
    over position_ids = the case's positions and seq_len - 1 (dynamic recomputes inv_freq from their
    max + 1, on a fresh module), and cos, sin [n, head_dim/2] (its first half: emb repeats freqs).
    float64: rope_frequencies, our formulas, cross-checked against the float32 one right here."""
    positions = inp["positions"]
    half = p["head_dim"] // 2
    if positions.dtype == torch.float32:
        module = _rotary_module(p)
        ids = torch.cat([positions.to(torch.long), torch.tensor([p["seq_len"] - 1])])[None]
        cos, sin = module(torch.zeros(1, dtype=torch.float32), ids)
        inv, factor = module.inv_freq.float(), float(module.attention_scaling)
        ours, ours_factor = rope_frequencies(p["head_dim"], p["theta"], _scaling(p), p["context"], p["seq_len"])
        rel = float(((ours - inv.double()).abs() / ours).max())
        assert rel < 1e-6 and abs(ours_factor - factor) < 1e-6, (p, rel, ours_factor, factor)
        return {"inv_freq": inv, "attention_factor": torch.tensor([factor]), "cos": cos[0, :-1, :half],
                "sin": sin[0, :-1, :half]}
    inv, factor = rope_frequencies(p["head_dim"], p["theta"], _scaling(p), p["context"], p["seq_len"])
    angle = positions[:, None] * inv[None, :]  # float64: the exact angle
    return {"inv_freq": inv, "attention_factor": torch.tensor([factor], dtype=torch.float64),
            "cos": torch.cos(angle) * factor, "sin": torch.sin(angle) * factor}


_GGML_QUANTIZED = {}


def ref_ggml_quantize(inp, p):
    # ggml's quantize_row_<type>_ref in numpy (ggml_quants.py, checked against the gguf package):
    # the bytes as floats 0..255 (compared exactly). The float64 call quantizes the same float32
    # values (the bytes are a function of the floats), so it reuses the float32 call's bytes.
    x = inp["x"].to(torch.float32).numpy()
    key = (p["type"], x.tobytes())
    if key not in _GGML_QUANTIZED:
        _GGML_QUANTIZED[key] = torch.tensor(list(ggml_quants.quantize(p["type"], x)), dtype=torch.float64)
    return {"bytes": _GGML_QUANTIZED[key].to(inp["x"].dtype)}


def ref_argmax(inp, p):
    # torch.argmax returns the first maximal index; stored as float so every output is numeric
    return {"index": torch.argmax(inp["x"]).reshape(1).to(inp["x"].dtype)}


def ref_quantize_q8_0(inp, p):
    # runq.c's quantize() (q8.py): C's round(), not torch.round; q stored as floats
    q, scales = q8.quantize_q8_0(inp["x"], p["group"])
    return {"q": q.to(inp["x"].dtype), "scales": scales}


def ref_matvec_q8_0(inp, p):
    # runq.c's matmul() (q8.py): exact int32 group sums, then its float steps in its order
    # (in float64 for reference64: the exact value of the same quantized product)
    return {"y": q8.matvec_q8_0(inp["Wq"].to(torch.int8), inp["Ws"], inp["xq"].to(torch.int8), inp["xs"], p["group"])}


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


def cases_sigmoid(g):
    return [("1024 gate logits ~N(0, 3²)", {}, {"x": randn(g, 1024, scale=3.0)}),
            ("extremes: saturation at ±20 and ±100 (1/(1 + inf) = 0, never NaN), zero, ±1e-7", {},
             {"x": torch.tensor([-100.0, -20.0, -1.0, -1e-7, 0.0, 1e-7, 1.0, 20.0, 100.0])})]


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


def cases_attention_window(g):
    """Sliding-window attention (Mistral, Qwen2): a query at position n_pos - 1 reads first .. n_pos - 1;
    ring: the rows of the ring buffer the stage stores the positions in (position t in row t % ring;
    0: no ring, row t). Windows across the kernel's tiles of 32, rings that wrap, and keys just outside
    the window that would dominate if read."""
    out = []
    for n_pos, window, ring, why in [(40, 8, 0, "window 8 of 40 positions, no ring"),
                                     (40, 8, 8, "a ring of exactly the window: the window wraps around it"),
                                     (100, 33, 40, "window 33 in a ring of 40 (window + 7 rows of a prefill chunk)"),
                                     (70, 64, 95, "window 64 across two tiles, ring larger than the positions"),
                                     (64, 32, 48, "the window starts on a tile boundary (first 32)"),
                                     (64, 33, 48, "the window starts one before a tile boundary (first 31)"),
                                     (5, 8, 8, "window larger than the positions: it hides nothing"),
                                     (30, 1, 1, "window 1: the query sees only itself")]:
        first = max(0, n_pos - window)
        out.append((f"{n_pos} positions, {why}", {"first": first, "ring": ring},
                    {"q": randn(g, 64), "k": randn(g, n_pos, 64), "v": randn(g, n_pos, 64)}))
    # the key just before the window matches the query with score 40: read, it would take all the weight
    q = randn(g, 64, scale=2.0)
    k = randn(g, 50, 64)
    k[50 - 16 - 1] = q * (40.0 * 8.0 / float(q.dot(q)))
    out.append(("a key of score 40 one position before the window of 16 (50 positions, ring 20): ignored",
                {"first": 50 - 16, "ring": 20}, {"q": q, "k": k, "v": randn(g, 50, 64)}))
    return out


def cases_rope_scaling(g):
    """Every scaling kind's frequencies (inv_freq, attention factor) and its cos and sin at positions
    below the original context (against transformers' rotary module) and far beyond it (against the
    float64 truth: the float32 angle is off by pos * ulp there, as in kernel.rope), and dynamic at
    sequence lengths below, at and beyond the original context."""
    kinds = [
        ("linear", dict(head_dim=64, theta=10000.0, context=2048, factor=4.0), [2048 * 4], "Code Llama-like: factor 4"),
        ("dynamic", dict(head_dim=64, theta=10000.0, context=2048, factor=2.0), [1000, 2048, 4096, 16384],
         "NTK-aware, recomputed for the sequence length"),
        ("yarn", dict(head_dim=64, theta=10000.0, context=4096, factor=4.0), [4096 * 4], "default betas (32, 1)"),
        ("yarn", dict(head_dim=128, theta=1e6, context=32768, factor=4.0, beta_fast=16.0, beta_slow=2.0,
                      attention_factor=1.25), [32768 * 4], "Qwen2.5-like, explicit betas and attention factor"),
        ("llama3", dict(head_dim=64, theta=500000.0, context=131072, factor=32.0, low_freq_factor=1.0,
                        high_freq_factor=4.0, original_max_position_embeddings=8192), [131072], "Llama 3.2's"),
        ("llama3", dict(head_dim=128, theta=500000.0, context=131072, factor=8.0, low_freq_factor=1.0,
                        high_freq_factor=4.0, original_max_position_embeddings=8192), [131072], "Llama 3.1 8B's"),
    ]
    out = []
    for kind, params, seq_lens, why in kinds:
        original = params.get("original_max_position_embeddings", params["context"])
        for seq_len in seq_lens:
            below = [0, 1, 5, 17, 31]
            beyond = sorted({100, original - 1, original, min(seq_len - 1, 4 * original), seq_len - 1})
            beyond = [q for q in beyond if q < seq_len]
            for positions, where, cmp in [(below, "positions 0..31", {}),
                                          (beyond, f"positions up to {beyond[-1]} (original context {original})",
                                           {"compare_with": "reference64"})]:
                p = {"kind": kind, "seq_len": seq_len, **params, **cmp}
                out.append((f"{kind} {why}, head_dim {params['head_dim']}, seq_len {seq_len}: {where}", p,
                            {"positions": torch.tensor(positions, dtype=torch.float32)}))
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


def cases_ggml_quantize(g):
    """Rows for every weight type's quantizer, chosen for the branches of ggml's fits: several blocks,
    a zero row, rows of one sign (the min clamped to 0), sub-blocks of magnitudes 1e-3 .. 1e3 side by
    side (small sub-block scales round to 0 against the largest: the "if (!d) continue" path), a
    sub-block below GROUP_MAX_EPS next to normal ones, exact halves (nearest_int's ties to even and
    roundf's away from zero), one outlier per block, and (32-blocks) scales past F16's range (d stored as inf)."""
    def sub_magnitudes(n, sub):
        return torch.cat([randn(g, sub, scale=10.0 ** (k % 7 - 3)) for k in range(n // sub)])
    rows = []
    for t in ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]:
        k = t.endswith("_K")
        n = 256 if k else 64  # the block of one case: a super-block, or two 32-blocks
        sub = 16 if t in ("Q2_K", "Q3_K", "Q6_K") else 32
        tiny = randn(g, n)
        tiny[:sub] = randn(g, sub, scale=1e-17)
        outliers = randn(g, 2 * n)
        outliers[:: 37] *= 40.0
        halves = (torch.arange(n, dtype=torch.float32) % 16 - 8) * 0.25 + 0.125 * (torch.arange(n) % 3 == 0)
        rows += [(f"{t}: N(0, 1), {2 * n} values ({2 * n // (256 if k else 32)} blocks)", {"type": t}, {"x": randn(g, 2 * n)}),
                 (f"{t}: zeros", {"type": t}, {"x": torch.zeros(n)}),
                 (f"{t}: all positive (3 + N(0, 0.1)): the min term clamped to 0", {"type": t}, {"x": 3 + randn(g, n, scale=0.1)}),
                 (f"{t}: all negative", {"type": t}, {"x": -2 - randn(g, n, scale=0.5).abs()}),
                 (f"{t}: sub-blocks of {sub} with magnitudes 1e-3 .. 1e3", {"type": t}, {"x": sub_magnitudes(n, sub)}),
                 (f"{t}: the first sub-block ~1e-17 (below GROUP_MAX_EPS)", {"type": t}, {"x": tiny}),
                 (f"{t}: multiples of 1/8 (exact halves after scaling)", {"type": t}, {"x": halves}),
                 (f"{t}: every 37th value x40", {"type": t}, {"x": outliers}),
                 (f"{t}: magnitudes ~1e3", {"type": t}, {"x": randn(g, n, scale=1e3)})]
        if not k:  # d = amax/127 (or max/-8 ...) past 65504: stored as inf. (For a K-quant, an inf
            # super-block scale times a sub-block scale of 0 is NaN: ggml's output there is garbage.)
            rows.append((f"{t}: magnitudes ~1e7 (the F16 scale overflows to inf)", {"type": t}, {"x": randn(g, n, scale=1e7)}))
    return rows


def cases_matvec_q8_0(g):
    """Quantized operands made from float ones by q8.quantize_q8_0 (what the C++ forward feeds
    the kernel), stored as floats: Wq [out, in], Ws [out, in/group], xq [in], xs [in/group]."""
    def case(desc, W, x, group):
        Wq, Ws = q8.quantize_q8_0(W, group)
        xq, xs = q8.quantize_q8_0(x, group)
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



# recipe kernel.<name> -> (cases, reference op)
KERNELS = {"matvec": (cases_matvec, ref_matvec), "matmul_xwt": (cases_matmul_xwt, ref_matmul_xwt),
           "linear": (cases_linear, ref_linear), "add": (cases_add, ref_add),
           "layernorm": (cases_layernorm, ref_layernorm), "gelu_tanh": (cases_gelu_tanh, ref_gelu_tanh),
           "gelu_erf": (cases_gelu_erf, ref_gelu_erf), "softmax": (cases_softmax, ref_softmax),
           "rmsnorm": (cases_rmsnorm, ref_rmsnorm), "rope": (cases_rope, ref_rope), "silu": (cases_silu, ref_silu),
           "sigmoid": (cases_sigmoid, ref_sigmoid),
           "swiglu": (cases_swiglu, ref_swiglu), "attention": (cases_attention, ref_attention),
           "attention_window": (cases_attention_window, ref_attention_window),
           "rope_scaling": (cases_rope_scaling, ref_rope_scaling),
           "argmax": (cases_argmax, ref_argmax), "quantize_q8_0": (cases_quantize_q8_0, ref_quantize_q8_0),
           "matvec_q8_0": (cases_matvec_q8_0, ref_matvec_q8_0),
           "ggml_quantize": (cases_ggml_quantize, ref_ggml_quantize)}


def export(row, ctx):
    """kernel/<name>.h5 for recipe kernel.<name>: its cases run through its reference op in float32
    and float64, from the random stream of the recipe's name."""
    name = row["recipe"][len("kernel."):]
    cases_fn, ref_fn = KERNELS[name]
    g = common.generator(row["recipe"])
    with fixtures.open_fixture(ctx.out_dir, row["fixture"], "kernel", ctx.sha) as f:
        for i, (desc, params, inputs) in enumerate(cases_fn(g)):
            inputs = {k: v.to(torch.float32).contiguous() for k, v in inputs.items()}
            outputs = ref_fn(inputs, params)
            reference64 = ref_fn({k: v.double() for k, v in inputs.items()}, params)
            fixtures.write_case(f, i, desc, params, inputs, outputs, reference64)
    return [ctx.out_path(row["fixture"])]
