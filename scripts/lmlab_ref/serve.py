"""The serving fixtures (recipe serve.batch, serve/batch_<model>.h5): 10 requests with different
prompt lengths, token budgets and arrival steps, each generated ALONE by the family's reference
(Reference.greedy, and the float64 logits of the same tokens). The harness serves them all together
with its scheduler (chunked prefill, paged KV cache) and must get every request's tokens exactly
and its logits within the logits tolerance: scheduling may change when a token is computed, never
what it is.
"""
import torch

from lmlab_ref import common, fixtures
from lmlab_ref.families import reference

PROMPT_LENGTHS = [3, 17, 1, 9, 30, 5, 12, 24, 2, 7]
MAX_NEW = [12, 6, 20, 9, 4, 16, 10, 5, 14, 8]
ARRIVALS = [0, 0, 1, 3, 3, 4, 8, 9, 15, 15]
# Two schedules of the same requests (case attributes the harness reads): a chunk that splits most
# prompts with pages of 16 and at most 4 running; then chunks of 3, pages of 5 (tiles straddle pages)
# and a pool of 12 pages that makes newcomers wait for room.
SCHEDULES = [dict(chunk=7, page_size=16, max_running=4, n_pages=0),
             dict(chunk=3, page_size=5, max_running=10, n_pages=12)]


def export(row, ctx):
    ref = reference(row, ctx)
    if ref is None:
        return []
    g = common.generator(row["id"] + ".prompts")
    bos = torch.tensor(ref.bos, dtype=torch.long)  # LLaMA's prompts start with BOS; GPT-2's and Qwen2's have none
    prompts = [torch.cat([bos, torch.randint(3, ref.prompt_vocab, (n - len(bos),), generator=g)]) for n in PROMPT_LENGTHS]
    tokens, logits32, logits64 = [], [], []
    for prompt, n_new in zip(prompts, MAX_NEW):
        t, l32 = ref.greedy(prompt, n_new)
        tokens += t
        logits32.append(l32)
        logits64.append(ref.truth_logits(prompt, t))
    logits32, logits64 = torch.cat(logits32), torch.cat(logits64)
    top = torch.topk(logits32, fixtures.GEN_TOP_K, dim=-1)
    with fixtures.open_fixture(ctx.out_dir, row["fixture"], "generation", ctx.sha, row["model"]) as f:
        for i, sched in enumerate(SCHEDULES):
            desc = (f"{len(prompts)} requests, each generated alone by the reference; served together with chunk "
                    f"{sched['chunk']}, pages of {sched['page_size']}, at most {sched['max_running']} running" +
                    (f", a pool of {sched['n_pages']} pages" if sched["n_pages"] else ""))
            fixtures.write_case(f, i, desc, sched,
                                {"prompt_tokens": torch.cat(prompts), "prompt_lengths": torch.tensor(PROMPT_LENGTHS),
                                 "max_new_tokens": torch.tensor(MAX_NEW), "arrival_steps": torch.tensor(ARRIVALS)},
                                {"tokens": torch.tensor(tokens, dtype=torch.float32),
                                 "topk_ids": top.indices.to(torch.float32), "topk_logits": top.values},
                                {"topk_logits": torch.gather(logits64, 1, top.indices)})
    return [ctx.out_path(row["fixture"])]
