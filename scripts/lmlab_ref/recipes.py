"""How each stage row's fixture is made: RECIPES maps the `recipe` column of `lmlab list --json`
("kernel.matvec", "layer.block", "model.forward", "generation.greedy", ...) to the function that
writes it, recipe(row, ctx) -> the paths written ([] when a ../shared file it needs is absent).

A recipe is a kind of fixture, not a stage: the stages come from the binary, each row names its
family (its models' reference: families/) and its model; the same recipe serves every family
whose Reference has what it asks for. The intermediates of a block come from the family's row of
the table, never from a list here.
"""
import os
import tempfile

import numpy as np
import torch

from lmlab_ref import bpe, common, conformance, fixtures, ggml_kernels, gguf_models, kernels, q8, quant, serve, tokenizers
from lmlab_ref.common import randn
from lmlab_ref.families import family, llama, reference as family_reference


def reference(row, ctx, key=None):
    """The reference of a stage row's model (families.reference); a GGUF file of a tiny model
    (models/gguf/*.gguf) is written and read by gguf_models."""
    key = key or row["model"]
    if key.endswith(".gguf"):
        family(row["family"], f"stage {row['id']}")
        try:
            return gguf_models.build(key, ctx)
        except common.Missing as e:
            print(f"export_golden: {row['fixture']} skipped: {e.path} not found")
            return None
    return family_reference(row, ctx, key)


def _path(ctx, row):
    return [ctx.out_path(row["fixture"])]


def _block_names(ctx, row):
    """The intermediates a single-block case returns: the family's, but its input ("in")."""
    return [n for n in ctx.table.intermediates(row["family"]) if n != "in"]


# ---- Layers -------------------------------------------------------------------------------------

def _layer_fixture(row, ctx, ref, points, run, truth, suffix="", with_cache=True, rope_angles=False):
    """layer/<name>.h5: for each point (layer, position, why), an input x [dim] and pos cached keys
    and values [pos, kv_dim] drawn from the row's own stream; run(layer, pos, x, ck, cv) -> outputs,
    truth(...) -> reference64 (None: none). rope_angles: q and k are RoPE'd at pos, so from
    kernels.LONG_ANGLE_POS on a case is held to the float64 truth."""
    dim, kv_dim, _ = ref.dims()
    g = common.generator(row["id"])
    with fixtures.open_fixture(ctx.out_dir, row["fixture"], "layer", ctx.sha, row["model"]) as f:
        for i, (layer, pos, why) in enumerate(points):
            x = randn(g, dim)
            ck, cv = randn(g, pos, kv_dim), randn(g, pos, kv_dim)
            inputs = {"x": x, "cache_k": ck, "cache_v": cv} if with_cache else {"x": x}
            params = {"layer": layer, "pos": pos} if with_cache else {"layer": layer}
            if rope_angles and pos >= kernels.LONG_ANGLE_POS:
                params["compare_with"] = "reference64"
            fixtures.write_case(f, i, why + suffix, params, inputs, run(layer, pos, x, ck, cv),
                                truth(layer, pos, x, ck, cv) if truth else {})
    return _path(ctx, row)


def layer_block(row, ctx):
    """One block on given inputs with a pre-filled KV cache (Reference.block_points), every
    intermediate, float32 and float64."""
    ref = reference(row, ctx)
    if ref is None:
        return []
    names = _block_names(ctx, row)
    return _layer_fixture(row, ctx, ref, ref.block_points(),
                          lambda *case: ref.layer_case(*case, names), lambda *case: ref.truth_layer_case(*case, names))


def layer_part(part):
    """layer.attention / layer.ffn: one part of a LLaMA block (Reference.part_case)."""
    def recipe(row, ctx):
        ref = reference(row, ctx)
        if ref is None:
            return []
        n_pos = ref.dims()[2]
        points = {"attention": [(0, 0, "position 0: empty cache"), (1, 1, "position 1"), (0, 17, "typical position"),
                                (1, n_pos - 2, f"near max_seq_len: {n_pos - 2} cached positions")],
                  "ffn": [(0, 0, "layer 0"), (1, 0, "layer 1")]}[part]
        return _layer_fixture(row, ctx, ref, points, lambda *case: ref.part_case(part, *case),
                              lambda *case: ref.part_case(part, *case, truth=True),
                              with_cache=part != "ffn", rope_angles=part == "attention")
    return recipe


def layer_block_q8(row, ctx):
    """layer/block_q8_0.h5: the int8 block (q8.py, runq.c's arithmetic) at the float block's points,
    every intermediate. No reference64: a float64 run would round activations to different integers,
    so it is not the truth of this computation."""
    base, group = q8.split_q8(row["model"])
    ref = reference(row, ctx, base)
    if ref is None:
        return []
    ref = ref.int8(group)
    names = _block_names(ctx, row)
    return _layer_fixture(row, ctx, ref, ref.block_points(), lambda *case: ref.layer_case(*case, names), None,
                          suffix=f", int8 (Q8_0, group {group})")


def layer_moe(row, ctx):
    """The sparse MoE block of each layer on the normalised inputs it sees inside the model: the
    layer's ffn_norm at every position of a 16-token prompt, as one [T, hidden] batch. Outputs: the
    family's intermediates between ffn_norm and ffn_out (router_logits, experts: ids [T, k], largest
    probability first, expert_weights, shared_out for Qwen2-MoE) and the block's output, out."""
    ref = reference(row, ctx)
    if ref is None:
        return []
    names = ctx.table.intermediates(row["family"])
    moe_names = names[names.index("ffn_norm") + 1:names.index("ffn_out")]
    tokens = common.default_prompt(ref.prompt_vocab, 16, row["id"])
    values, _ = ref.forward_intermediates(tokens, names)
    with fixtures.open_fixture(ctx.out_dir, row["fixture"], "layer", ctx.sha, row["model"]) as f:
        for layer in range(ref.model.config.num_hidden_layers):
            x = values[f"layer{layer}.ffn_norm"]
            out32 = ref.moe_case(layer, x, moe_names)
            gap = ref.routing_gap(out32["router_logits"])
            fixtures.write_case(f, layer, f"layer {layer}'s experts on its normalised inputs at {len(tokens)} positions "
                                f"(smallest k-th/(k+1)-th router logit gap {gap:.3g})", {"layer": layer}, {"x": x}, out32,
                                ref.truth_moe_case(layer, x, moe_names))
    return _path(ctx, row)


# ---- Whole model --------------------------------------------------------------------------------

def _model_prompt(row, ctx, write):
    """The model's prompt (Reference.forward_tokens) through the model and its float64 truth;
    write(f, tokens, run32, run64) writes the case, each run (values, cache)."""
    ref = reference(row, ctx)
    if ref is None:
        return []
    names = ctx.table.intermediates(row["family"])
    run32 = ref.forward_intermediates(ref.forward_tokens, names)
    run64 = ref.truth_intermediates(ref.forward_tokens, names)
    with fixtures.open_fixture(ctx.out_dir, row["fixture"], "model", ctx.sha, row["model"]) as f:
        write(f, ref.forward_tokens, run32, run64)
    return _path(ctx, row)


def model_forward(row, ctx):
    """model/forward*.h5: every intermediate of every layer at every position of the prompt,
    final_norm and logits, float32 and float64."""
    return _model_prompt(row, ctx, lambda f, tokens, run32, run64: fixtures.forward_case(f, tokens, run32[0], run64[0]))


def model_kv_cache(row, ctx):
    """model/kv_cache*.h5: the keys and values cached after the prompt, float32 and float64."""
    return _model_prompt(row, ctx, lambda f, tokens, run32, run64: fixtures.kv_cache_case(f, tokens, run32[1], run64[1]))


def model_forward_q8(row, ctx):
    """The model as lmlab's quantize_model makes it (every weight and activation rounded with C's
    round(), as runq.c's quantize()), run by q8.py on model.forward's prompt: every intermediate,
    as model/forward.h5. No reference64 (see layer_block_q8)."""
    base, group = q8.split_q8(row["model"])
    ref = reference(row, ctx, base)
    if ref is None:
        return []
    tokens = ref.forward_tokens
    out32, _ = ref.int8(group).forward_intermediates(tokens, ctx.table.intermediates(row["family"]))
    with fixtures.open_fixture(ctx.out_dir, row["fixture"], "model", ctx.sha, row["model"]) as f:
        fixtures.write_case(f, 0, f"{len(tokens)}-token prompt through the int8 model (Q8_0, group {group}), every "
                            "intermediate at every position", {"group": group}, {"tokens": tokens}, out32, {})
    return _path(ctx, row)


def model_ak42(row, ctx):
    """llama2.c's int8 file of the tiny LLaMA (the row's model), written as its export.py
    version2_export writes it (q8.write_version2: weights rounded with torch.round), and the
    reference for it: q8.py with export.py's weights and runq.c's run-time quantization. The case
    records the float file and how many weights sit on an exact half (where torch.round and C's
    round() disagree), so the harness can check the file against quantize_model of the float file."""
    ref = reference(row, ctx, llama.TINY_LLAMA_FILE)
    group, max_err = q8.write_version2(ref.model, ctx.out_path(row["model"]), 64)
    halves = q8.round_half_differences(ref.model, group)
    print(f"export_golden: {row['model']}: llama2.c version 2, group {group}, max quantization error {max_err:.3g}, "
          f"{halves} weights on an exact half (torch.round and C's round() disagree there)")
    tokens = ref.forward_tokens
    out32, _ = ref.int8(group, rounding=torch.round).forward_intermediates(tokens, ctx.table.intermediates(row["family"]))
    with fixtures.open_fixture(ctx.out_dir, row["fixture"], "model", ctx.sha, row["model"]) as f:
        fixtures.write_case(f, 0, f"{len(tokens)}-token prompt through llama2.c's int8 file (export.py's torch.round "
                            "weights), every intermediate at every position",
                            {"group": group, "float_model": llama.TINY_LLAMA_FILE, "round_half_differences": halves},
                            {"tokens": tokens}, out32, {})
    return _path(ctx, row)


# ---- Generation ---------------------------------------------------------------------------------

def generation_greedy(row, ctx):
    """generation/greedy*.h5: the model's greedy case (Reference.greedy_case: prompt, n_new), the
    tokens and logits of the float32 reference, and the float64 logits of the same token sequence
    (comparable even after a near-tie)."""
    ref = reference(row, ctx)
    if ref is None:
        return []
    prompt, n_new, why = ref.greedy_case
    tokens, logits32 = ref.greedy(prompt, n_new)
    logits64 = ref.truth_logits(prompt, tokens)
    assert logits64.shape == logits32.shape, (logits64.shape, logits32.shape)
    with fixtures.open_fixture(ctx.out_dir, row["fixture"], "generation", ctx.sha, row["model"]) as f:
        fixtures.greedy_case(f, why, prompt, tokens, logits32, logits64)
    return _path(ctx, row)


# ---- Tokenizers ---------------------------------------------------------------------------------
# The reference of each tokenizer a row names (its `model` column): ctx -> (texts, ids, vocab_size,
# allow_special). SentencePiece for the llama2.c-style vocabularies, tiktoken and HF tokenizers
# (which must agree) for GPT-2's, HF tokenizers for Qwen's, which recognises added tokens such as
# <|im_start|> in the text (allow_special; GPT-2's fixture holds "<|endoftext|>" as plain text).

def _kjv(ctx):
    return ctx.once("kjv", tokenizers.kjv_text)


def _tiny_llama_tokenizer(ctx):
    ref = llama.build(llama.TINY_LLAMA_FILE, ctx)  # its vocabulary lives in its model file
    texts = tokenizers.tokenizer_cases(ref.kjv_text)
    return texts, tokenizers.spm_encode(ref.spm_proto, texts), ref.model.cfg.vocab_size, False


def _llama2_tokenizer(ctx):
    with open(ctx.shared_file(common.LLAMA2_SPM_MODEL), "rb") as f:
        proto = f.read()
    texts = tokenizers.tokenizer_cases(_kjv(ctx))
    return texts, tokenizers.spm_encode(proto, texts), 32000, False


def _stories_tokenizer(ctx):
    proto = tokenizers.spm_from_llama2c(*tokenizers.read_llama2c_vocab(ctx.shared_file(common.STORIES_TOKENIZER), 512))
    texts = tokenizers.tokenizer_cases(_kjv(ctx))
    return texts, tokenizers.spm_encode(proto, texts), 512, False


def _gpt2_tokenizer(ctx):
    ctx.shared_file(common.GPT2_ENCODER)
    texts = bpe.gpt2_texts(_kjv(ctx))
    return texts, bpe.gpt2_reference_ids(texts, ctx.shared_dir), 50257, False


def _qwen_tokenizer(ctx):
    ctx.shared_file(common.QWEN_TOKENIZER)
    texts = bpe.qwen_texts(_kjv(ctx))
    return texts, bpe.qwen_reference_ids(texts, ctx.shared_dir, allow_special=True), bpe.QWEN_VOCAB, True


def _llama3_tokenizer(ctx):
    ctx.shared_file(common.LLAMA3_TOKENIZER)
    texts = bpe.llama3_texts(_kjv(ctx))
    return texts, bpe.llama3_reference_ids(texts, ctx.shared_dir, allow_special=True), bpe.LLAMA3_VOCAB, True


# Texts for the prompt cases of a tokenizer with a chat template or a post-processor's BOS: how
# `lmlab generate` turns them into a prompt must equal transformers' (mode "prompt":
# tokenizer(text), add_special_tokens=True; mode "chat": apply_chat_template of one user turn with the
# generation prompt). No special tokens inside: lmlab keeps a user's typed "<|eot_id|>" as text.
PROMPT_TEXTS = ["Hello world", " Hello world", "The capital of France is", "1234567", "", "  padded with spaces and a newline\n",
                "\n\nstarts with blank lines", "Wie geht's? \u00bfQu\u00e9 tal? \u4f60\u597d \U0001F600",
                "trailing ideographic space\u3000", "tabs\tinside\tand at the end\t"]


def _prompt_cases(ctx, tokenizer_dir):
    """(mode, text, ids) for PROMPT_TEXTS through transformers' own tokenizer of tokenizer_dir (its
    tokenizer.json, and tokenizer_config.json's chat template)."""
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(ctx.shared_file(tokenizer_dir))
    cases = [("prompt", t, tok(t)["input_ids"]) for t in PROMPT_TEXTS]
    cases += [("chat", t, tok.apply_chat_template([{"role": "user", "content": t}], add_generation_prompt=True,
                                                   tokenize=True)) for t in PROMPT_TEXTS]
    return cases


TOKENIZER_PROMPTS = {"shared:" + common.LLAMA3_TOKENIZER: "tokenizers/llama3"}


def _gguf_bpe_tokenizer(base, arch, pre, bos, eos, tokenizer_json):
    """A byte-level BPE tokenizer as a GGUF file's metadata (models/gguf/<arch>-tokenizer.gguf, written
    with the converter's layout by gguf_models.add_bpe_tokenizer from the Hugging Face tokenizer.json),
    held to the same reference ids as base's stage (HF tokenizers / tiktoken on the same texts)."""
    def make(ctx):
        texts, ids, vocab_size, allow_special = ctx.once("tokenizer:" + base, lambda: TOKENIZERS[base](ctx))
        path = ctx.out_path(f"models/gguf/{arch}-tokenizer.gguf")
        with tempfile.TemporaryDirectory() as tmp:
            gguf_models.write_tokenizer_only(path, arch, lambda w: gguf_models.add_bpe_tokenizer(
                w, tokenizer_json(ctx, tmp), vocab_size, pre, bos, eos))
        return texts, ids, vocab_size, allow_special
    return make


def _gpt2_tokenizer_json(ctx, tmp):
    path = os.path.join(tmp, "tokenizer.json")
    bpe.gpt2_hf(ctx.shared_dir).save(path)  # encoder.json + vocab.bpe as transformers' GPT2TokenizerFast saves them
    return path


TOKENIZERS = {llama.TINY_LLAMA_FILE: _tiny_llama_tokenizer, "shared:" + common.LLAMA2_TOKENIZER: _llama2_tokenizer,
              "shared:" + common.STORIES_TOKENIZER: _stories_tokenizer, "shared:tokenizers/gpt2": _gpt2_tokenizer,
              "shared:" + common.QWEN_TOKENIZER: _qwen_tokenizer, "shared:" + common.LLAMA3_TOKENIZER: _llama3_tokenizer}
TOKENIZERS["models/gguf/gpt2-tokenizer.gguf"] = _gguf_bpe_tokenizer("shared:tokenizers/gpt2", "gpt2", "gpt-2", 50256, 50256,
                                                                    _gpt2_tokenizer_json)
TOKENIZERS["models/gguf/qwen2-tokenizer.gguf"] = _gguf_bpe_tokenizer(
    "shared:" + common.QWEN_TOKENIZER, "qwen2", "qwen2", 151643, 151645, lambda ctx, tmp: ctx.shared_file(common.QWEN_TOKENIZER))


def tokenizer(row, ctx):
    """tokenizer/<name>.h5: (text -> ids) pairs from the reference tokenizer of the row's vocabulary."""
    if row["model"] not in TOKENIZERS:
        raise SystemExit(f"lmlab_ref: stage {row['id']}: no tokenizer reference for '{row['model']}' "
                         f"(known: {', '.join(TOKENIZERS)})")
    try:
        texts, ids, vocab_size, allow_special = TOKENIZERS[row["model"]](ctx)
    except common.Missing as e:
        print(f"export_golden: {row['fixture']} skipped: {e.path} not found")
        return []
    with fixtures.open_fixture(ctx.out_dir, row["fixture"], "tokenizer", ctx.sha) as f:
        fixtures.write_attr(f, "tokenizer", row["model"])
        fixtures.write_attr(f, "vocab_size", vocab_size)
        fixtures.write_attr(f, "allow_special", int(allow_special))
        cases = [("text", t, i) for t, i in zip(texts, ids)]
        if row["model"] in TOKENIZER_PROMPTS:
            cases += _prompt_cases(ctx, TOKENIZER_PROMPTS[row["model"]])
        for i, (mode, t, case_ids) in enumerate(cases):
            raw = t.encode("utf-8")
            preview = t[:60].encode("unicode_escape").decode("ascii") + ("…" if len(t) > 60 else "")
            grp = fixtures.create_group(f, f"case_{i:03d}")
            what = {"text": "", "prompt": "as a prompt (the post-processor's BOS): ",
                    "chat": "as one chat turn (transformers' apply_chat_template): "}[mode]
            fixtures.write_attr(grp, "description", what + (f"{len(raw)} bytes: {preview}" if t else "empty string"))
            if mode != "text":
                fixtures.write_attr(grp, "mode", mode)
            # raw UTF-8 bytes: any byte string fits, and h5dump shows exactly what was encoded
            fixtures.create_group(grp, "inputs").create_dataset("text", data=np.frombuffer(raw, dtype=np.uint8),
                                                                track_times=False)
            out = fixtures.create_group(grp, "outputs")
            out.create_dataset("ids", data=np.asarray(case_ids, dtype=np.float32), track_times=False)
            out.create_dataset("n_ids", data=np.asarray([len(case_ids)], dtype=np.float32), track_times=False)
    return _path(ctx, row)


RECIPES = {**{f"kernel.{name}": kernels.export for name in kernels.KERNELS},
           "kernel.ggml.dequantize": ggml_kernels.export_dequantize, "kernel.ggml.matvec": ggml_kernels.export_matvec,
           **{f"conformance.{name}": conformance.export for name in conformance.OPS},
           "layer.attention": layer_part("attention"), "layer.ffn": layer_part("ffn"), "layer.block": layer_block,
           "layer.block.q8_0": layer_block_q8, "layer.moe": layer_moe,
           "model.forward": model_forward, "model.kv_cache": model_kv_cache,
           "model.forward.q8_0": model_forward_q8, "model.forward.q8_0.ak42": model_ak42,
           "generation.greedy": generation_greedy, "serve.batch": serve.export, "quant.cost": quant.export,
           "quant.report": quant.export_report,
           "tokenizer": tokenizer}
