"""The cost of int8 (recipe quant.cost, quant/cost_<model>.h5): the held-out text the harness feeds
the float and the int8 model (the tiny LLaMA: Ecclesiastes 3 of the KJV text, the first 384 ids;
stories260K: the paragraph below), the greedy prompt, and PyTorch's perplexity of the float model
on that text (the one output: it checks the harness's perplexity; everything else the harness
measures).
"""
import math

import torch

from lmlab_ref import common, fixtures, q8, tokenizers
from lmlab_ref.families import llama, reference

HELD_OUT_TOKENS = 384  # of the held-out text (BOS included); the tiny LLaMA's context is 512

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


def _tiny_llama_text(ctx, ref):
    ids = ([1] + tokenizers.spm_encode(ref.spm_proto, [kjv_chapter(ref.kjv_text, "Ecclesiastes", 3)])[0])[:HELD_OUT_TOKENS]
    return ids, ids[:8], f"Ecclesiastes 3 (KJV), first {HELD_OUT_TOKENS} ids; greedy from its first 8"


def _stories_text(ctx, ref):
    proto = tokenizers.spm_from_llama2c(*tokenizers.read_llama2c_vocab(ctx.shared_file(common.STORIES_TOKENIZER), 512))
    ids = [1] + tokenizers.spm_encode(proto, [STORIES_HELD_OUT])[0]
    return ids, [1], "a TinyStories-like paragraph written in the exporter; greedy from BOS"


# the float model -> its held-out text: (ids, greedy prompt, what they are)
HELD_OUT = {llama.TINY_LLAMA_FILE: _tiny_llama_text, llama.STORIES: _stories_text}


def export(row, ctx):
    base, group = q8.split_q8(row["model"])
    if base not in HELD_OUT:
        raise SystemExit(f"lmlab_ref: stage {row['id']}: no held-out text for '{base}' (known: {', '.join(HELD_OUT)})")
    ref = reference(row, ctx, base)
    if ref is None:
        return []
    ids, prompt, what = HELD_OUT[base](ctx, ref)
    tokens = torch.tensor(ids)
    values, _ = ref.forward_intermediates(tokens, ())
    logp = torch.log_softmax(values["logits"][:-1].double(), dim=-1)  # float32 logits, log-softmax in double
    ppl = math.exp(float(-logp.gather(1, tokens[1:, None]).mean()))
    with fixtures.open_fixture(ctx.out_dir, row["fixture"], "generation", ctx.sha, row["model"]) as f:
        fixtures.write_case(f, 0, f"{len(ids)} held-out tokens: {what}", {"max_new_tokens": 256, "group": group},
                            {"tokens": tokens, "prompt": torch.tensor(prompt)}, {"ppl_float": torch.tensor([ppl])}, {})
    return [ctx.out_path(row["fixture"])]


# ---- recipe quant.report: what `lmlab verify --model Q --against F` reports, computed by PyTorch ----

# the quantized model -> the float model it is compared with (both GGUF files llama.cpp's tools made)
AGAINST = {"shared:models/stories260K/stories260K-q8_0.gguf": "shared:models/stories260K/stories260K.gguf"}
# the per-layer tensor kinds (llama.cpp's names) and the transformers module each is, for the llama block
LINEAR_KINDS = (("attn_q", "self_attn.q_proj"), ("attn_k", "self_attn.k_proj"), ("attn_v", "self_attn.v_proj"),
                ("attn_output", "self_attn.o_proj"), ("ffn_gate", "mlp.gate_proj"), ("ffn_up", "mlp.up_proj"),
                ("ffn_down", "mlp.down_proj"))


def _rel(a, b):
    """|a - b| / |b|, root of the sums of squares over every element (harness/quantization.h's relative RMS)."""
    a, b = a.double(), b.double()
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


def _row_major(x):
    """[T, n] of a module's input or output [1, T, n] (a decoder layer returns a tuple: its first)."""
    return (x[0] if isinstance(x, tuple) else x)[0].detach()


def _captured(model, tokens, modules, pre_hook=None):
    """{module name: (input, output)} of the named submodules on one forward of tokens [T] (batch 1),
    the final norm's output as "model.norm", the logits; pre_hook = (layer index, hidden input) replaces
    that decoder layer's input (the teacher-forced run)."""
    seen, handles = {}, []
    named = dict(model.named_modules())
    for name in modules:
        handles.append(named[name].register_forward_hook(
            lambda mod, args, out, name=name: seen.__setitem__(name, (_row_major(args[0]), _row_major(out)))))
    if pre_hook is not None:
        layer, x = pre_hook
        handles.append(model.model.layers[layer].register_forward_pre_hook(
            lambda mod, args: (x[None].clone(),) + tuple(args[1:])))
    try:
        with torch.no_grad():
            logits = model(tokens[None]).logits[0].float()
    finally:
        for h in handles:
            h.remove()
    return seen, logits


def _scores(model_q, model_f, ids, ctx, bos):
    """llama-perplexity's statistics over ids: chunks of ctx tokens when the text is longer (each
    starting with bos, only its second half scored), else the whole text, every position scored; at
    each scored position t (predicting ids[t + 1]) KL(P_f || P_q) and whether the top-1 agree; the two
    perplexities. Log-softmax of float32 logits in float64, as the harness."""
    if len(ids) <= ctx:
        chunks, first = [list(ids)], 0
    else:
        chunks = [[bos] + list(ids[k * ctx + 1:(k + 1) * ctx]) for k in range(len(ids) // ctx)]
        first = ctx // 2
    kl, top1, nll_q, nll_f = [], [], 0.0, 0.0
    for chunk in chunks:
        t = torch.tensor(chunk)
        with torch.no_grad():
            lq = model_q(t[None]).logits[0].float()
            lf = model_f(t[None]).logits[0].float()
        for p in range(first, len(chunk) - 1):
            pq, pf = torch.log_softmax(lq[p].double(), -1), torch.log_softmax(lf[p].double(), -1)
            kl.append(max(float((pf.exp() * (pf - pq)).sum()), 0.0))
            top1.append(float(int(torch.argmax(lq[p])) == int(torch.argmax(lf[p]))))
            nll_q -= float(pq[chunk[p + 1]])
            nll_f -= float(pf[chunk[p + 1]])
    n = len(kl)
    return chunks[0], kl, top1, math.exp(nll_q / n), math.exp(nll_f / n)


def _tensor_errors(model_q, model_f, chunk):
    """[(name, added, inherited, total)] of every tensor on the first chunk (all its rows), as
    harness/quantization.h defines them: y = W·x at the tensor, x_f and x_q each model's own input
    there; added |W_q·x_f - W_f·x_f| / |W_f·x_f|, inherited |W_f·x_q - ...|, total |W_q·x_q - ...|.
    Plus each layer's output, teacher-forced (the quantized layer on the float model's input) and
    free-running. The llama files' q and k rows are in Meta's order: a permutation of rows, which a
    relative RMS over every row does not see."""
    tokens = torch.tensor(chunk)
    L = model_f.config.num_hidden_layers
    names = [f"model.layers.{l}.{m}" for l in range(L) for _, m in LINEAR_KINDS] + ["model.norm", "model.embed_tokens"]
    names += [f"model.layers.{l}" for l in range(L)]
    seen_f, _ = _captured(model_f, tokens, names)
    seen_q, _ = _captured(model_q, tokens, names)
    rows = []
    e_q, e_f = seen_q["model.embed_tokens"][1], seen_f["model.embed_tokens"][1]
    rows.append(("token_embd", _rel(e_q, e_f), 0.0, _rel(e_q, e_f)))
    modules_q, modules_f = dict(model_q.named_modules()), dict(model_f.named_modules())
    layer_rows = []
    for l in range(L):
        for kind, m in LINEAR_KINDS:
            name = f"model.layers.{l}.{m}"
            wq, wf = modules_q[name], modules_f[name]
            xf, yf = seen_f[name]
            xq, _ = seen_q[name]
            with torch.no_grad():
                rows.append((f"blk.{l}.{kind}", _rel(wq(xf), yf), _rel(wf(xq), yf), _rel(wq(xq), yf)))
        # the layer's output: the quantized layer on the float model's input, and free-running
        x_in = seen_f[f"model.layers.{l}"][0]
        teacher, _ = _captured(model_q, tokens, [f"model.layers.{l}"], pre_hook=(l, x_in))
        out_f = seen_f[f"model.layers.{l}"][1]
        layer_rows.append((_rel(teacher[f"model.layers.{l}"][1], out_f), _rel(seen_q[f"model.layers.{l}"][1], out_f)))
    nq, nf = seen_q["model.norm"][1], seen_f["model.norm"][1]
    with torch.no_grad():
        hq, hf = model_q.lm_head, model_f.lm_head
        rows.append(("output", _rel(hq(nf), hf(nf)), _rel(hf(nq), hf(nf)), _rel(hq(nq), hf(nf))))
    return rows, layer_rows


def export_report(row, ctx):
    """quant/report_<name>.h5: stories260K's Q8_0 file against its F32 file (llama.cpp's converter and
    quantizer made both), each loaded by transformers' GGUF loading (gguf_models.load_model, bug 4
    worked around), on the held-out paragraph: two cases, the file's own context (128: one chunk,
    its second half scored) and chunks of 48 (three)."""
    from lmlab_ref import gguf_models
    if row["model"] not in AGAINST:
        raise SystemExit(f"lmlab_ref: stage {row['id']}: no float model to compare '{row['model']}' with "
                         f"(known: {', '.join(AGAINST)})")
    try:
        path_q = ctx.shared_file(row["model"][len("shared:"):])
        path_f = ctx.shared_file(AGAINST[row["model"]][len("shared:"):])
        ids, _, what = _stories_text(ctx, None)
    except common.Missing as e:
        print(f"export_golden: {row['fixture']} skipped: {e.path} not found")
        return []
    model_q, how = gguf_models.load_model(path_q, "llama", tied=False, null_pad=True)
    model_f, _ = gguf_models.load_model(path_f, "llama", tied=False, null_pad=True)
    with fixtures.open_fixture(ctx.out_dir, row["fixture"], "generation", ctx.sha, row["model"]) as f:
        fixtures.write_attr(f, "against", AGAINST[row["model"]])
        fixtures.write_attr(f, "reference", how)
        for i, ctx_len in enumerate((int(model_f.config.max_position_embeddings), 48)):
            chunk0, kl, top1, ppl_q, ppl_f = _scores(model_q, model_f, ids, ctx_len, 1)
            tensors, layers = _tensor_errors(model_q, model_f, chunk0)
            outputs = {"kl": torch.tensor(kl), "top1_same": torch.tensor(top1),
                       "ppl": torch.tensor([ppl_q, ppl_f]),
                       "added": torch.tensor([t[1] for t in tensors]), "inherited": torch.tensor([t[2] for t in tensors]),
                       "total": torch.tensor([t[3] for t in tensors]),
                       "layer_added": torch.tensor([a for a, _ in layers]), "layer_total": torch.tensor([t for _, t in layers])}
            fixtures.write_case(f, i, f"{len(ids)} held-out tokens ({what}), chunks of {ctx_len}: "
                                f"{len(kl)} scored positions", {"ctx": ctx_len, "tensors": ",".join(t[0] for t in tensors)},
                                {"tokens": torch.tensor(ids)}, outputs, {})
    return [ctx.out_path(row["fixture"])]
