"""What the two mixture-of-experts families (families/qwen2moe.py, families/mixtral.py) share: transformers' own
Qwen2MoeForCausalLM / MixtralForCausalLM (eager attention) as the reference, their intermediates
captured by forward hooks on transformers' modules (hf_decoder's for the attention half, hooks on
the sparse MoE block for the rest), and a float64 truth: llama_ref.py's LLaMA block with its
feed-forward replaced by MoeRef below, every step in float64. Each family module holds its Spec
(classes, config, where its block and expert weights are) and calls these with it.

transformers 4.46.3's Qwen2MoeSparseMoeBlock / MixtralSparseMoeBlock, per token x [hidden]:
    router_logits = gate(x)                                    [n_experts]
    p = softmax(router_logits, dtype=float32)                  (float32 even in a float64 model)
    weights, experts = topk(p, k)                              largest first
    weights /= weights.sum()                                   (Mixtral always; Qwen2-MoE if norm_topk_prob)
    out = sum over experts e = 0..n-1 that were chosen: expert_e(x) * weight_e   (index_add_, by expert id)
    Qwen2-MoE: out += sigmoid(shared_expert_gate(x)) * shared_expert(x)
Each expert is a SwiGLU MLP: down(silu(gate(x)) * up(x)) (Mixtral names them w1, w3, w2).

The chosen experts and their weights are not outputs of any module: they are recomputed here from
the captured router logits with the block's own operations (F.softmax(dtype=torch.float),
torch.topk, the same division), which on the same input give the same bits; a forward hook on
every expert checks that each processed exactly as many tokens as the recomputed choice says.
"""
import copy
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from lmlab_ref import common, hf_decoder, hooks, llama_ref

# The router's weights are N(0, (ROUTER_SCALE^2)/in): router logits of std ~2 on a normalised input,
# so that the top-2 differ from token to token and the k-th and (k+1)-th scores are rarely close
# (with N(0, 1/in) routing is still varied, but gaps are smaller). Other scales as qwen2.py's.
ROUTER_SCALE = 2.0
NORM_STD = 0.1
QKV_BIAS_STD = 0.5

# The near-tie model (mixtral.py's tiny-mixtral-tied): layer TIED_LAYER's router row of expert
# TIED_EXPERTS[1] replaced by expert TIED_EXPERTS[0]'s. Their scores are then exactly equal for every
# token, and torch.topk's order among equal values is unspecified (ours: the lower id first), so
# wherever the two straddle the top-k boundary or fill the top-k, the choice can differ from ours:
# every such token must be reported as a routing near-tie and the stages must still pass.
TIED_LAYER = 1
TIED_EXPERTS = (6, 7)


@dataclass(frozen=True)
class Spec:
    """One MoE family: its transformers classes and tiny config, its stage rows' model keys
    (models/tiny-<name>, and "-tied" twins), the attribute of a decoder layer that holds the sparse
    block, the expert weights' names (llama_ref's w1, w2, w3 -> theirs), and the config fields of
    the expert width, the number of experts and the shared expert's width."""
    name: str
    config_cls: type
    model_cls: type
    tiny: dict
    keys: tuple
    block: str
    expert_names: tuple
    width: str
    n_experts: str
    shared_width: str = None


# ---- transformers' model ----------------------------------------------------------------------------

def build_tiny(spec, gen, tied=False):
    """The tiny model with every parameter drawn from gen (named_parameters order), in eval mode:
    norms 1 + 0.1 N, q/k/v biases (Qwen2-MoE) 0.5 N, every Linear N(0, 1/in), the routers
    ROUTER_SCALE times that, the embedding N(0, 1). tied: then the near-tie change (TIED_LAYER)."""
    model = spec.model_cls(spec.config_cls(**spec.tiny, attn_implementation="eager"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            n = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if name == "model.embed_tokens.weight":
                p.copy_(n)
            elif name.endswith("norm.weight"):
                p.copy_(1.0 + NORM_STD * n)
            elif name.endswith(".bias"):
                p.copy_(QKV_BIAS_STD * n)
            elif p.dim() == 2:
                router = name.endswith(f"{spec.block}.gate.weight")
                p.copy_(n * ((ROUTER_SCALE if router else 1.0) * p.shape[1] ** -0.5))
            else:
                raise ValueError(f"unexpected parameter {name}")
        if tied:
            router = getattr(model.model.layers[TIED_LAYER], spec.block).gate.weight
            router[TIED_EXPERTS[1]] = router[TIED_EXPERTS[0]]
    hf_decoder.check_eager(model)
    return model.eval()


def routing(block, router_logits, dtype):
    """(experts [T, k] as float, weights [T, k]) from router logits [T, n_experts], with the block's
    own operations (Qwen2MoeSparseMoeBlock.forward / MixtralSparseMoeBlock.forward)."""
    w = F.softmax(router_logits, dim=1, dtype=torch.float)
    w, ids = torch.topk(w, block.top_k, dim=-1)
    if getattr(block, "norm_topk_prob", True):  # Mixtral's block has no flag: it always renormalises
        w /= w.sum(dim=-1, keepdim=True)
    return ids.to(dtype), w.to(dtype)


# The intermediates the sparse block's hooks give (_MoeHooks.results), as opposed to hf_decoder's
MOE_ROLES = ("router_logits", "experts", "expert_weights", "shared_out")


class _MoeHooks:
    """Hooks on one sparse MoE block: its router logits (gate), the shared expert and its gate, the
    output, and the number of rows each expert processed."""

    def __init__(self, block):
        self.block, self.handles, self.v = block, [], {}
        self.rows = [0] * len(block.experts)
        self._hook(block.gate, "router_logits")
        if hasattr(block, "shared_expert"):
            self._hook(block.shared_expert, "shared")
            self._hook(block.shared_expert_gate, "shared_gate")
        for e, expert in enumerate(block.experts):
            self.handles.append(expert.register_forward_hook(self._count(e)))

    def _hook(self, module, key):
        def hook(m, inp, out):
            assert key not in self.v, f"{key} called twice"
            self.v[key] = out.detach().clone()  # [T, ...]: the block flattened (batch, seq)
        self.handles.append(module.register_forward_hook(hook))

    def _count(self, e):
        def hook(m, inp, out):
            self.rows[e] += inp[0].shape[0]
        return hook

    def results(self, dtype):
        """MOE_ROLES -> [T, ...] (shared_out: Qwen2-MoE only)."""
        logits = self.v["router_logits"]
        ids, w = routing(self.block, logits, dtype)
        for e, n in enumerate(self.rows):  # transformers' own dispatch agrees with the recomputed choice
            assert n == int((ids == e).sum()), f"expert {e} processed {n} rows, the routing says {int((ids == e).sum())}"
        out = {"router_logits": logits, "experts": ids, "expert_weights": w}
        if "shared" in self.v:
            out["shared_out"] = F.sigmoid(self.v["shared_gate"]) * self.v["shared"]  # the block's own expression
        return out

    def remove(self):
        for h in self.handles:
            h.remove()


def _select(values, names, what):
    missing = [n for n in names if n not in values]
    if missing:
        raise SystemExit(f"lmlab_ref: {what} gives no {', '.join(missing)}")
    return {n: values[n] for n in names}


def forward_intermediates(spec, model, tokens, names):
    """transformers' full-sequence forward on tokens [T]: (values, cache_k, cache_v) as
    hf_decoder.forward_intermediates' (the attention half and ffn_out from its hooks, MOE_ROLES
    from the sparse blocks')."""
    dtype = next(model.parameters()).dtype
    moe = [_MoeHooks(getattr(layer, spec.block)) for layer in model.model.layers]
    where = {**hf_decoder.HOOKS, "ffn_out": (spec.block, "out")}  # the block returns (hidden, router_logits)
    try:
        values, cache_k, cache_v = hf_decoder.forward_intermediates(model, tokens, names, where, others=MOE_ROLES)
    finally:
        for h in moe:
            h.remove()
    out = {}
    for i, h in enumerate(moe):
        extra = _select(h.results(dtype), [n for n in names if n in MOE_ROLES], type(model).__name__)
        for n in names:
            out[f"layer{i}.{n}"] = extra[n] if n in extra else values[f"layer{i}.{n}"]
    out["final_norm"], out["logits"] = values["final_norm"], values["logits"]
    return out, cache_k, cache_v


def block_case(spec, model, layer, x, names):
    """The sparse MoE block of `layer` alone on x [T, hidden] (T tokens at once, as inside the model):
    names (of MOE_ROLES) and "out", the block's output."""
    block = getattr(model.model.layers[layer], spec.block)
    dtype = next(model.parameters()).dtype
    h = _MoeHooks(block)
    try:
        with torch.no_grad():
            out, logits = block(x.to(dtype)[None])
    finally:
        h.remove()
    values = h.results(dtype)
    assert torch.equal(values["router_logits"], logits)
    return {**_select(values, names, type(block).__name__), "out": out[0]}


def routing_gaps(router_logits, k):
    """Per token, the reference's k-th minus (k+1)-th router logit (a small gap could flip)."""
    top = torch.topk(router_logits, k + 1, dim=-1).values
    return top[:, k - 1] - top[:, k]


# ---- The float64 truth: llama_ref's block with MoeRef as its feed-forward ------------------------

class Expert(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x), in the dtype of its weights."""

    def __init__(self, dim, width):
        super().__init__()
        self.w1 = nn.Linear(dim, width, bias=False)
        self.w2 = nn.Linear(width, dim, bias=False)
        self.w3 = nn.Linear(dim, width, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class MoeRef(nn.Module):
    """The sparse MoE feed-forward of one token x [dim], written from the formulas, every step in the
    weights' dtype (float64: the truth; transformers' block keeps its softmax in float32). The
    nn.Identity modules give hooks a place to see the chosen experts, their weights and the shared
    expert's gated output (FF_HOOKS)."""

    def __init__(self, dim, width, n_experts, k, renormalise, shared_width):
        super().__init__()
        self.k, self.renormalise = k, renormalise
        self.gate = nn.Linear(dim, n_experts, bias=False)
        self.experts = nn.ModuleList(Expert(dim, width) for _ in range(n_experts))
        self.shared = Expert(dim, shared_width) if shared_width else None
        self.shared_gate = nn.Linear(dim, 1, bias=False) if shared_width else None
        self.chosen, self.weights, self.shared_mix = nn.Identity(), nn.Identity(), nn.Identity()

    def forward(self, x):
        logits = self.gate(x)
        p = F.softmax(logits, dim=-1)
        w, ids = torch.topk(p, self.k)
        if self.renormalise:
            w = w / w.sum()
        self.chosen(ids.to(x.dtype))
        self.weights(w)
        out = torch.zeros_like(x)
        for e in range(len(self.experts)):  # expert-id order, as transformers' loop
            for r in range(self.k):
                if int(ids[r]) == e:
                    out = out + self.experts[e](x) * w[r]
        if self.shared is not None:
            out = out + self.shared_mix(torch.sigmoid(self.shared_gate(x)) * self.shared(x))
        return out


# Where MOE_ROLES are seen inside a MoeRef, and inside a llama_ref block whose feed-forward it is
FF_HOOKS = {"router_logits": ("gate", "out"), "experts": ("chosen", "out"), "expert_weights": ("weights", "out"),
            "shared_out": ("shared_mix", "out")}
TRUTH_HOOKS = {**llama_ref.HOOKS, **{n: ("feed_forward." + p, side) for n, (p, side) in FF_HOOKS.items()}}


def to_llama_ref(spec, model):
    """A llama_ref.Llama (rotate-half RoPE, q/k/v biases for Qwen2-MoE) whose blocks' feed_forward is
    MoeRef, with the transformers model's weights; in the model's dtype, eval mode."""
    c = model.config
    width, n_experts = getattr(c, spec.width), getattr(c, spec.n_experts)
    shared = getattr(c, spec.shared_width) if spec.shared_width else 0
    renormalise = bool(getattr(c, "norm_topk_prob", True))  # Mixtral's config has no flag: it always renormalises
    cfg = hf_decoder.llama_ref_config(model, ffn_dim=width)
    with torch.random.fork_rng(devices=[]):  # the throwaway random init leaves the global RNG alone
        ref = llama_ref.Llama(cfg)
        for blk in ref.layers:
            blk.feed_forward = MoeRef(c.hidden_size, width, n_experts, c.num_experts_per_tok, renormalise, shared)
    sd = model.state_dict()
    used = set()

    def take(name):
        used.add(name)
        return sd[name]

    with torch.no_grad():
        ref.tok_embeddings.weight.copy_(take("model.embed_tokens.weight"))
        ref.norm.weight.copy_(take("model.norm.weight"))
        if not cfg.tied_embeddings:
            ref.output.weight.copy_(take("lm_head.weight"))
        for i, blk in enumerate(ref.layers):
            p = f"model.layers.{i}."
            blk.attention_norm.weight.copy_(take(p + "input_layernorm.weight"))
            blk.ffn_norm.weight.copy_(take(p + "post_attention_layernorm.weight"))
            for ours, theirs in (("wq", "q_proj"), ("wk", "k_proj"), ("wv", "v_proj"), ("wo", "o_proj")):
                lin = getattr(blk.attention, ours)
                lin.weight.copy_(take(f"{p}self_attn.{theirs}.weight"))
                if lin.bias is not None:
                    lin.bias.copy_(take(f"{p}self_attn.{theirs}.bias"))
            ff = blk.feed_forward
            m = f"{p}{spec.block}."
            ff.gate.weight.copy_(take(m + "gate.weight"))
            for e, ex in enumerate(ff.experts):
                for ours, theirs in spec.expert_names:
                    getattr(ex, ours).weight.copy_(take(f"{m}experts.{e}.{theirs}.weight"))
            if ff.shared is not None:
                for ours, theirs in spec.expert_names:
                    getattr(ff.shared, ours).weight.copy_(take(f"{m}shared_expert.{theirs}.weight"))
                ff.shared_gate.weight.copy_(take(m + "shared_expert_gate.weight"))
    unused = set(sd) - used
    if unused:
        raise ValueError(f"to_llama_ref: parameters with no place: {sorted(unused)}")
    return ref.to(next(model.parameters()).dtype).eval()


def truth_block(ref, layer, x, names):
    """MoeRef of `layer` on each row of x [T, hidden] in ref's dtype: names (of MOE_ROLES) and "out",
    each [T, ...], as block_case's."""
    ff = ref.layers[layer].feed_forward
    dtype = next(ff.parameters()).dtype
    rec = hooks.Recorder()
    hooks.unplaced(rec.place(ff, "", names, FF_HOOKS), "MoeRef")
    rec.out(ff, "out")
    try:
        with torch.no_grad():
            for t in range(x.shape[0]):
                ff(x[t].to(dtype))
    finally:
        rec.remove()
    return {n: rec.stacked(n) for n in list(names) + ["out"]}


def cross_check(spec, model, ref, tokens, names):
    """transformers' float32 forward vs llama_ref + MoeRef in float32 on tokens: the same experts at
    every token and layer, every intermediate within 1e-5 relative to max(1, max |it|); returns
    (worst intermediate, its relative difference, max |logits difference|). SystemExit otherwise."""
    hf, _, _ = forward_intermediates(spec, model, tokens, names)
    ours, _ = llama_ref.run_tokens(copy.deepcopy(ref), tokens, torch.float32, names, TRUTH_HOOKS)
    worst, rel = None, 0.0
    for key, v in hf.items():
        if key.endswith(".experts"):
            if not torch.equal(v, ours[key]):
                raise SystemExit(f"moe.cross_check: {key} differs: transformers {v.tolist()}, llama_ref+MoeRef "
                                 f"{ours[key].tolist()}")
            continue
        r = float((v.double() - ours[key].double()).abs().max()) / max(1.0, float(v.abs().max()))
        if r > rel:
            worst, rel = key, r
    if rel > 1e-5:
        raise SystemExit(f"moe.cross_check: {worst} differs by {rel:.3e} (relative) between transformers and "
                         f"llama_ref+MoeRef in float32")
    return worst, rel, float((hf["logits"] - ours["logits"]).abs().max())


class MoeReference(hf_decoder.DecoderRef):
    """transformers' MoE model (float32) and its float64 truth, llama_ref + MoeRef (made by make_truth
    after a float32 cross-check: the same experts everywhere). No single-block case: layer.moe's
    moe_case instead."""

    def __init__(self, spec, model):
        super().__init__(spec.name, model)
        self.spec = spec
        self.what = f"transformers {type(model).__name__}"

    def make_truth(self, tokens, names, max_positions=None):
        """tokens None: no cross-check (the tied model, whose exact ties may be ordered either way:
        it is the checked model with one router row copied)."""
        ref = to_llama_ref(self.spec, self.model)
        if max_positions is not None:
            ref.cfg.max_seq_len = max_positions
        checked = "not cross-checked (exact routing ties)"
        if tokens is not None:
            role, rel, dl = cross_check(self.spec, self.model, ref, tokens, names)
            checked = (f"transformers agrees with llama_ref + MoeRef, max |logits diff| {dl:.3g}, worst intermediate "
                       f"{role} {rel:.3g} (relative), the same experts everywhere")
        self.truth = ref.double()
        return checked

    def forward_intermediates(self, tokens, names):
        values, k, v = forward_intermediates(self.spec, self.model, tokens, names)
        return values, {"cache_k": k, "cache_v": v}

    def truth_intermediates(self, tokens, names):
        return llama_ref.forward(self.truth, tokens, names, TRUTH_HOOKS)

    def layer_case(self, layer, pos, x, cache_k, cache_v, names):
        self._none("single-block (layer.moe: moe_case)")

    def truth_layer_case(self, layer, pos, x, cache_k, cache_v, names):
        self._none("single-block (layer.moe: moe_case)")

    def moe_case(self, layer, x, names):
        return block_case(self.spec, self.model, layer, x, names)

    def truth_moe_case(self, layer, x, names):
        return truth_block(self.truth, layer, x, names)

    def routing_gap(self, router_logits):
        """The smallest k-th minus (k+1)-th router logit over the rows."""
        return float(routing_gaps(router_logits, self.model.config.num_experts_per_tok).min())


def build(spec, key, ctx):
    """The tiny model of spec (key models/tiny-<name>; "-tied": the same weights with two experts'
    router rows made equal) from a fixed seed, saved with save_pretrained, its float64 truth made
    (and cross-checked, but on the tied model) once per export."""
    if key not in spec.keys:
        raise SystemExit(f"lmlab_ref: family {spec.name} has no model '{key}' (known: {', '.join(spec.keys)})")
    tied = key.endswith("-tied")

    def tiny():
        model = build_tiny(spec, common.generator(f"model.tiny-{spec.name}"), tied=tied)
        ref = MoeReference(spec, model)
        vocab = model.config.vocab_size
        names = ctx.table.intermediates(spec.name)
        checked = ref.make_truth(None if tied else common.default_prompt(vocab, 16, f"model.tiny-{spec.name}"), names)
        print(f"export_golden: {key}: {checked}")
        hf_decoder.save_hf_dir(model, ctx.out_path(key))
        ref.set_prompts(f"tiny-{spec.name}", vocab, n_new=48)  # (the tiny MoE models' context is 64)
        return ref
    return ctx.once(key, tiny)


def load(spec, path, fmt):
    """A user's Hugging Face directory for `lmlab verify` (its truth, by make_truth)."""
    if fmt != "hf":
        raise SystemExit(f"lmlab_ref: {path}: family {spec.name} reads Hugging Face directories, not {fmt}")
    return MoeReference(spec, common.load_pretrained(spec.model_cls, path))
