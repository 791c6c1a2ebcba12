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
