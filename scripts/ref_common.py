"""What the transformers-based references (ref_gpt2.py, ref_hf_llama.py) share: a float64 copy of
a model, greedy decoding with transformers' own generate(), the float64 logits of a greedy run, and
the top-1/top-2 logit gaps. Nothing runs at import time."""
import copy
import time

import torch
from transformers import GenerationConfig


def to_float64(model):
    """A float64 copy of the model (the "truth" the float32 results are measured against; see each
    reference's notes on what transformers still computes in float32)."""
    return copy.deepcopy(model).double().eval()


def greedy(model, prompt, n_new, pad_token_id, **generation_config):
    """Greedy decoding with transformers' generate(): exactly n_new new tokens (eos_token_id=None:
    nothing stops early and no logits processor touches the scores, so an end-of-text id may be
    generated like any other token). Returns (tokens list[int], logits [n_new, V] in the model's
    dtype): row i is the logits after the prompt and the first i new tokens, the row tokens[i] was
    chosen from. synced_gpus=False: in Debian's torch 1.13 the FSDP probe generate() makes otherwise
    crashes on import."""
    prompt = torch.as_tensor(prompt, dtype=torch.long)[None]
    gc = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=n_new, min_new_tokens=n_new,
                          bos_token_id=pad_token_id, eos_token_id=None, pad_token_id=pad_token_id, use_cache=True,
                          **generation_config)
    with torch.no_grad():
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt), generation_config=gc,
                             output_logits=True, return_dict_in_generate=True, synced_gpus=False)
    tokens = [int(t) for t in out.sequences[0, prompt.shape[1]:]]
    logits = torch.cat(out.logits, dim=0)
    assert len(tokens) == n_new and logits.shape == (n_new, model.config.vocab_size)
    assert tokens == [int(i) for i in torch.argmax(logits, dim=-1)], "generate() did not pick the argmax"
    return tokens, logits


def teacher_forced_logits64(model, sequence, n_prompt):
    """Float64 logits for a greedy run: one full forward of a float64 copy of the model (or the
    model itself if it is float64) on sequence = prompt + new tokens; returns rows
    n_prompt-1 .. len(sequence)-2, i.e. [n_new, V] aligned with greedy()'s logits."""
    sequence = torch.as_tensor(sequence, dtype=torch.long)
    m64 = model if next(model.parameters()).dtype == torch.float64 else to_float64(model)
    with torch.no_grad():
        logits = m64(input_ids=sequence[None], use_cache=False, return_dict=True).logits[0]
    return logits[n_prompt - 1: len(sequence) - 1]


def top2_gaps(logits):
    """Top-1 minus top-2 logit, per row."""
    top = torch.topk(logits, 2, dim=-1).values
    return top[:, 0] - top[:, 1]


def timed(label, fn, timings):
    """fn(), with (label, seconds) appended to timings (the references' self-check timings)."""
    t0 = time.perf_counter()
    r = fn()
    timings.append((label, time.perf_counter() - t0))
    return r
