"""The PyTorch reference LLaMA: written from the paper's formulas, one token at a time with an
explicit KV cache, exactly the computation the C++ engine does (so the two can be compared
intermediate by intermediate). The llama family's reference (families/llama.py: the tiny LLaMA,
llama2.c checkpoints such as stories260K), cross-checked against transformers' LlamaForCausalLM;
and, with Config qkv_bias=True and rope_style "rotate_half" (Qwen2 is LLaMA plus q/k/v biases), the
float64 truth of transformers' decoders (hf_decoder.to_llama_ref; the MoE models with their own
feed-forward): every step runs in the dtype the model is given, RoPE angles included.

Intermediates are captured with forward hooks on named submodules (HOOKS); the nn.Identity modules
(q_rope, k_rope, resid_attn) exist only to give hooks a place to look at q and k after RoPE and
at the first residual.
"""
import math
import struct

import torch
import torch.nn as nn
import torch.nn.functional as F

from lmlab_ref import hooks


def rope_angles(pos, head_dim, theta, dtype):
    """Angles pos * theta^(-2i/head_dim), i = 0 .. head_dim/2 - 1 (Su et al. 2021).
    float32: freq rounded to float32, then pos * freq in float32, as LLaMA's precompute does;
    float64: the exact angle."""
    freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    return torch.tensor(float(pos), dtype=dtype) * freq.to(dtype)


def apply_rope(x, pos, head_dim, theta, style):
    """x: [..., n_heads * head_dim]. style 'adjacent': pairs (x[2i], x[2i+1]) (Meta, llama2.c);
    'rotate_half': pairs (x[i], x[i + head_dim/2]) (Hugging Face, Qwen2)."""
    ang = rope_angles(pos, head_dim, theta, x.dtype)
    cos, sin = torch.cos(ang), torch.sin(ang)
    h = x.reshape(*x.shape[:-1], -1, head_dim)
    if style == "adjacent":
        a, b = h[..., 0::2], h[..., 1::2]
        out = torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2)
    else:
        half = head_dim // 2
        a, b = h[..., :half], h[..., half:]
        out = torch.cat((a * cos - b * sin, a * sin + b * cos), dim=-1)
    return out.reshape(x.shape)



class Config:
    def __init__(self, dim, n_layers, n_heads, n_kv_heads, ffn_dim, vocab_size, max_seq_len,
                 rope_theta=10000.0, rope_style="adjacent", norm_eps=1e-5, tied_embeddings=False, arch="llama",
                 qkv_bias=False):
        assert dim % n_heads == 0 and n_heads % n_kv_heads == 0
        self.arch, self.dim, self.n_layers, self.n_heads, self.n_kv_heads = arch, dim, n_layers, n_heads, n_kv_heads
        self.ffn_dim, self.vocab_size, self.max_seq_len = ffn_dim, vocab_size, max_seq_len
        self.rope_theta, self.rope_style, self.norm_eps, self.tied_embeddings = rope_theta, rope_style, norm_eps, tied_embeddings
        self.qkv_bias = qkv_bias  # Qwen2: wq, wk, wv have biases (wo and the FFN never do)
        self.head_dim = dim // n_heads
        self.kv_dim = self.head_dim * n_kv_heads

    def attrs(self):
        """The config as written to the model file's root attributes (qkv_bias only when set)."""
        attrs = {"arch": self.arch, "dim": self.dim, "n_layers": self.n_layers, "n_heads": self.n_heads,
                 "n_kv_heads": self.n_kv_heads, "ffn_dim": self.ffn_dim, "vocab_size": self.vocab_size,
                 "max_seq_len": self.max_seq_len, "rope_theta": float(self.rope_theta), "rope_style": self.rope_style,
                 "norm_eps": float(self.norm_eps), "tied_embeddings": int(self.tied_embeddings)}
        if self.qkv_bias:
            attrs["qkv_bias"] = 1
        return attrs


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        # Zhang & Sennrich 2019: x / sqrt(mean(x^2) + eps) * weight
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.wq = nn.Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.wk = nn.Linear(cfg.dim, cfg.kv_dim, bias=cfg.qkv_bias)
        self.wv = nn.Linear(cfg.dim, cfg.kv_dim, bias=cfg.qkv_bias)
        self.wo = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)
        self.q_rope = nn.Identity()
        self.k_rope = nn.Identity()

    def forward(self, x, pos, cache_k, cache_v):
        """x: [dim] (one token), pos: its position; cache_k/v: [max_seq_len, kv_dim], rows < pos filled.
        Writes row pos of the cache and returns the attention output [dim]."""
        c = self.cfg
        q = self.q_rope(apply_rope(self.wq(x), pos, c.head_dim, c.rope_theta, c.rope_style))
        k = self.k_rope(apply_rope(self.wk(x), pos, c.head_dim, c.rope_theta, c.rope_style))
        v = self.wv(x)
        cache_k[pos] = k
        cache_v[pos] = v
        keys = cache_k[: pos + 1].view(pos + 1, c.n_kv_heads, c.head_dim)
        values = cache_v[: pos + 1].view(pos + 1, c.n_kv_heads, c.head_dim)
        group = c.n_heads // c.n_kv_heads  # query head h reads kv head h // group
        out = torch.empty(c.n_heads, c.head_dim, dtype=x.dtype)
        for h in range(c.n_heads):
            kh, vh = keys[:, h // group, :], values[:, h // group, :]
            qh = q.view(c.n_heads, c.head_dim)[h]
            probs = F.softmax(torch.matmul(kh, qh) / math.sqrt(c.head_dim), dim=-1)
            out[h] = torch.matmul(probs, vh)
        return self.wo(out.reshape(-1))


class FeedForward(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.w1 = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.w2 = nn.Linear(cfg.ffn_dim, cfg.dim, bias=False)
        self.w3 = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))  # SwiGLU (Shazeer 2020)


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attention = Attention(cfg)
        self.resid_attn = nn.Identity()
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.feed_forward = FeedForward(cfg)

    def forward(self, x, pos, cache_k, cache_v):
        h = self.resid_attn(x + self.attention(self.attention_norm(x), pos, cache_k, cache_v))
        return h + self.feed_forward(self.ffn_norm(h))


class Llama(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tied_embeddings:
            self.output.weight = self.tok_embeddings.weight

    def new_cache(self, dtype):
        c = self.cfg
        return (torch.zeros(c.n_layers, c.max_seq_len, c.kv_dim, dtype=dtype),
                torch.zeros(c.n_layers, c.max_seq_len, c.kv_dim, dtype=dtype))

    def forward(self, token, pos, cache):
        x = self.tok_embeddings.weight[token]
        for i, layer in enumerate(self.layers):
            x = layer(x, pos, cache[0][i], cache[1][i])
        return self.output(self.norm(x))


# Where each intermediate of a Block is seen: name -> (submodule path inside the block, "out" for
# its output or "in" for its input; "" is the block itself). The names asked for, and their order,
# come from the family's row of `lmlab list --json` (the C++ returns the same names in the same
# order, so the first mismatch in that order is the first divergence).
HOOKS = {"in": ("", "in"), "attn_norm": ("attention_norm", "out"), "q": ("attention.q_rope", "out"),
         "k": ("attention.k_rope", "out"), "v": ("attention.wv", "out"), "heads": ("attention.wo", "in"),
         "attn_out": ("attention", "out"), "h": ("resid_attn", "out"), "ffn_norm": ("ffn_norm", "out"),
         "ffn_gate": ("feed_forward.w1", "out"), "ffn_up": ("feed_forward.w3", "out"),
         "ffn_act": ("feed_forward.w2", "in"), "ffn_out": ("feed_forward", "out"), "out": ("", "out")}


def _recorder(model, names, where, layers):
    rec = hooks.Recorder()
    for i in layers:
        hooks.unplaced(rec.place(model.layers[i], f"layer{i}.", names, where), "llama_ref")
    return rec


def run_tokens(model, tokens, dtype, names=(), where=HOOKS):
    """Runs tokens through the model one at a time from position 0 in dtype (the model is moved to
    it). Returns (values, cache): values holds layer<i>.<name> [n_tokens, ...] for every layer and
    each of names in order, then final_norm and logits; cache is (k, v) [n_layers, max_seq_len, kv_dim].
    where: the hook table (HOOKS; a block with another feed-forward brings its own)."""
    model = model.to(dtype)
    rec = _recorder(model, names, where, range(len(model.layers)))
    rec.out(model.norm, "final_norm")
    rec.out(model.output, "logits")
    cache = model.new_cache(dtype)
    try:
        with torch.no_grad():
            for pos, tok in enumerate(tokens):
                model(int(tok), pos, cache)
    finally:
        rec.remove()
    keys = [f"layer{i}.{n}" for i in range(len(model.layers)) for n in names] + ["final_norm", "logits"]
    return {k: rec.stacked(k) for k in keys}, cache


def forward(model, tokens, names, where=HOOKS):
    """run_tokens in the model's dtype: (values, {"cache_k", "cache_v": [n_layers, T, kv_dim]})."""
    values, cache = run_tokens(model, tokens, next(model.parameters()).dtype, names, where)
    n = len(tokens)
    return values, {"cache_k": cache[0][:, :n], "cache_v": cache[1][:, :n]}


def layer_case(model, layer, pos, x, cache_k, cache_v, names, part="block", where=HOOKS):
    """Block `layer` (part "block"), or only its attention (part "attention"), on one token x [dim] at
    position pos after a cache whose rows < pos are cache_k/cache_v [pos, kv_dim], in the model's
    dtype. Returns {name: value} for names (intermediates of that part), in order."""
    c = model.cfg
    dtype = next(model.parameters()).dtype
    ck = torch.zeros(c.max_seq_len, c.kv_dim, dtype=dtype)
    cv = torch.zeros(c.max_seq_len, c.kv_dim, dtype=dtype)
    ck[:pos], cv[:pos] = cache_k.to(dtype), cache_v.to(dtype)
    blk = model.layers[layer]
    x = x.to(dtype)
    rec = _recorder(model, names, where, [layer])
    try:
        with torch.no_grad():
            (blk.attention if part == "attention" else blk)(x, pos, ck, cv)
    finally:
        rec.remove()
    return {n: rec.values[f"layer{layer}.{n}"][-1] for n in names}


def greedy(model, prompt, n_new, dtype=torch.float32):
    """Greedy generation: returns (new tokens, logits [n_new, vocab] that chose each of them).
    Step i's logits are those after the prompt and the first i new tokens."""
    model = model.to(dtype)
    cache = model.new_cache(dtype)
    tokens, logits_seen = [], []
    with torch.no_grad():
        logits = None
        for pos, tok in enumerate(prompt):
            logits = model(int(tok), pos, cache)
        for i in range(n_new):
            nxt = int(torch.argmax(logits))  # first maximum wins
            tokens.append(nxt)
            logits_seen.append(logits.clone())
            if i + 1 < n_new:
                logits = model(nxt, len(prompt) + i, cache)
    return tokens, torch.stack(logits_seen)


def load_llama2c(path):
    """A llama2.c checkpoint (layout in ../shared/models/stories260K/README.md) as a Llama."""
    with open(path, "rb") as f:
        data = f.read()
    dim, hidden, n_layers, n_heads, n_kv_heads, vocab, seq_len = struct.unpack("<7i", data[:28])
    shared = vocab > 0
    vocab = abs(vocab)
    cfg = Config(dim, n_layers, n_heads, n_kv_heads, hidden, vocab, seq_len, tied_embeddings=shared)
    model = Llama(cfg)
    body = torch.frombuffer(bytearray(data[28:]), dtype=torch.float32)
    off = 0

    def take(*shape):
        nonlocal off
        n = math.prod(shape)
        t = body[off: off + n].view(*shape).clone()
        off += n
        return t

    hd, kv = cfg.head_dim, cfg.kv_dim
    with torch.no_grad():
        model.tok_embeddings.weight.copy_(take(vocab, dim))
        for name, shape in [("attention_norm.weight", (dim,)), ("attention.wq.weight", (dim, dim)),
                            ("attention.wk.weight", (kv, dim)), ("attention.wv.weight", (kv, dim)),
                            ("attention.wo.weight", (dim, dim)), ("ffn_norm.weight", (dim,)),
                            ("feed_forward.w1.weight", (hidden, dim)), ("feed_forward.w2.weight", (dim, hidden)),
                            ("feed_forward.w3.weight", (hidden, dim))]:
            w = take(n_layers, *shape)
            for i in range(n_layers):
                model.layers[i].get_parameter(name).copy_(w[i])
        model.norm.weight.copy_(take(dim))
        take(seq_len * hd // 2)  # freq_cis_real (unused: RoPE is recomputed)
        take(seq_len * hd // 2)  # freq_cis_imag
        if not shared:
            model.output.weight.copy_(take(vocab, dim))
    if off != body.numel():
        raise ValueError(f"{path}: {body.numel() - off} floats left over after the weights; not a llama2.c checkpoint?")
    return model
