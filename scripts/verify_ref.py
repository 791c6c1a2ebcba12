"""The reference half of `lmlab verify`: runs the reference on a user's own checkpoint and writes
fixtures in the golden format, which lmlab's model, KV-cache, prefill and generation stages then
read. `lmlab verify` calls this script; run by hand it is

    .venv/bin/python scripts/verify_ref.py --model DIR_OR_FILE --prompt-ids 1,403,407 --generate 16 --out DIR

The reference is someone else's code wherever that exists:
  - a Hugging Face directory (config.json model_type "gpt2", "llama", "qwen2"): transformers' own
    GPT2LMHeadModel / LlamaForCausalLM / Qwen2ForCausalLM (eager attention, float32), its
    intermediates captured with ref_gpt2.py / ref_hf_llama.py;
  - an llm.c float32 checkpoint: transformers' GPT2LMHeadModel with its weights (ref_gpt2.load_llmc);
  - a llama2.c float32 checkpoint: our llama_ref.py (llama2.c has no PyTorch class of its own; llama_ref
    is cross-checked against transformers' LlamaForCausalLM by ref_hf_llama.py's self-check).
Float64 truth: GPT-2 from transformers in float64; LLaMA and Qwen2 from llama_ref.py in float64 on the
same weights (transformers keeps RMSNorm, softmax and RoPE in float32 even in a float64 copy), after
checking that llama_ref in float32 computes what transformers computes (cross_check_qwen2).

Writes into --out: model/forward.h5 (every intermediate at every prompt position), model/kv_cache.h5,
generation/greedy.h5 (N greedy tokens, logits at every step), and manifest.json (the model files with
their sha256, the prompt, N, the exporter's sha256, timings, peak memory). A rerun whose model files,
prompt, N, --no-f64 and exporter are unchanged reuses them and says so.

Progress goes to stderr, one line per phase with its time (loading a 0.5B model and its float64 copy
takes seconds; the float64 forward of a long prompt, minutes).
"""
import argparse
import json
import os
import resource
import sys
import time

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing is ever downloaded from a model hub
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import torch  # noqa: E402
import transformers  # noqa: E402

import export_golden as eg  # noqa: E402
import llama_ref  # noqa: E402
import ref_common  # noqa: E402
import ref_gpt2  # noqa: E402
import ref_hf_llama  # noqa: E402
from golden_status import exporter_sha256, sha256_file  # noqa: E402

MANIFEST_VERSION = 1
FIXTURES = ("model/forward.h5", "model/kv_cache.h5", "generation/greedy.h5")
HF_CLASSES = {"gpt2": transformers.GPT2LMHeadModel, "llama": transformers.LlamaForCausalLM,
              "qwen2": transformers.Qwen2ForCausalLM}


def progress(msg):
    print(f"verify: {msg}", file=sys.stderr, flush=True)


class Phase:
    """`with Phase("float32 forward"):` prints the phase, then its time."""

    def __init__(self, label, timings):
        self.label, self.timings = label, timings

    def __enter__(self):
        self.t0 = time.perf_counter()
        progress(f"{self.label} ...")

    def __exit__(self, *exc):
        dt = time.perf_counter() - self.t0
        self.timings[self.label] = round(dt, 3)
        progress(f"  done in {dt:.1f} s")


# ---- The model files --------------------------------------------------------------------------

def detect_format(path):
    """'hf' (a directory with config.json), 'llmc' (llm.c's magic), 'llama2c' (anything else: the
    C++ loader has already accepted the file, so its header is a llama2.c one)."""
    if os.path.isdir(path):
        if not os.path.exists(os.path.join(path, "config.json")):
            raise SystemExit(f"verify_ref: {path} is a directory without config.json")
        return "hf"
    with open(path, "rb") as f:
        head = f.read(8)
    if len(head) >= 4 and int.from_bytes(head[:4], "little") == ref_gpt2.LLMC_MAGIC:
        return "llmc"
    if head[:4] == b"ak42":
        raise SystemExit(f"verify_ref: {path} is a llama2.c int8 (ak42) file; verify compares float weights with "
                         "a float reference: verify the float32 checkpoint it was exported from")
    return "llama2c"


def model_files(path):
    """The files that define the computation: config.json, the safetensors (and their index), or the
    checkpoint file. Tokenizer files are not part of it (verify takes token ids)."""
    if not os.path.isdir(path):
        return [path]
    names = sorted(n for n in os.listdir(path)
                   if n == "config.json" or n.endswith(".safetensors") or n.endswith(".safetensors.index.json"))
    return [os.path.join(path, n) for n in names]


def load_reference(path, fmt):
    """(family, float32 reference model, what it is)."""
    if fmt == "llama2c":
        return "llama", llama_ref.load_llama2c(path).eval(), "llama_ref.py (the paper's formulas; llama2.c layout)"
    if fmt == "llmc":
        return "gpt2", ref_gpt2.load_llmc(path), "transformers GPT2LMHeadModel (weights from the llm.c file)"
    with open(os.path.join(path, "config.json")) as f:
        model_type = json.load(f).get("model_type")
    if model_type not in HF_CLASSES:
        raise SystemExit(f"verify_ref: {path}/config.json: model_type {model_type!r} is not one of {sorted(HF_CLASSES)}")
    cls = HF_CLASSES[model_type]
    model = cls.from_pretrained(path, torch_dtype=torch.float32, attn_implementation="eager").eval()
    return model_type, model, f"transformers {cls.__name__}"


# ---- The reference runs -----------------------------------------------------------------------

def run_reference(family, model, fmt, prompt, n_new, f64, timings):
    """(forward: role -> [T, ...] f32 and f64, cache dicts f32 and f64, generation dict)."""
    tokens = torch.tensor(prompt, dtype=torch.long)
    out64 = cache64 = logits64 = None
    if family == "gpt2":
        with Phase(f"float32 forward of {len(prompt)} tokens, every intermediate", timings):
            out32, cache32 = eg.gpt2_forward_outputs(model, tokens)
        with Phase(f"greedy generation of {n_new} tokens (transformers generate)", timings):
            pad = model.config.eos_token_id if model.config.eos_token_id is not None else 0
            gen_tokens, logits32 = ref_common.greedy(model, tokens, n_new, pad)
        if f64:
            with Phase("float64 copy, forward and teacher-forced generation logits", timings):
                m64 = ref_gpt2.to_float64(model)
                out64, cache64 = eg.gpt2_forward_outputs(m64, tokens)
                logits64 = ref_common.teacher_forced_logits64(m64, torch.cat([tokens, torch.tensor(gen_tokens)]), len(prompt))
    elif fmt == "hf":  # LlamaForCausalLM / Qwen2ForCausalLM
        with Phase(f"float32 forward of {len(prompt)} tokens, every intermediate", timings):
            out32, k32, v32 = ref_hf_llama.forward_intermediates(model, tokens)
            cache32 = {"cache_k": k32, "cache_v": v32}
        with Phase(f"greedy generation of {n_new} tokens (transformers generate)", timings):
            gen_tokens, logits32 = ref_hf_llama.greedy(model, tokens, n_new)
        if f64:
            with Phase("float64 truth: llama_ref.py on the same weights, cross-checked in float32", timings):
                ref = ref_hf_llama.qwen2_to_llama_ref(model)
                # its KV cache for the positions this run uses, not Qwen2.5's 32768 (1.6 GB in float64)
                ref.cfg.max_seq_len = len(prompt) + n_new
                diff, role, rel = ref_hf_llama.cross_check_qwen2(model, ref, tokens)
                progress(f"llama_ref.py agrees with {type(model).__name__}: max |logits diff| {diff:.3g}, "
                         f"worst intermediate {role} {rel:.3g}")
                ref64 = ref.double()  # in place: one copy of the weights fewer at the peak
                out64, k64, v64 = ref_hf_llama.qwen2_forward64(ref64, tokens)
                cache64 = {"cache_k": k64, "cache_v": v64}
                logits64 = ref_hf_llama.qwen2_logits64(ref64, torch.cat([tokens, torch.tensor(gen_tokens)]), len(prompt))
    else:  # llama2.c: llama_ref, token by token
        with Phase(f"float32 forward of {len(prompt)} tokens, every intermediate", timings):
            out32, cache32 = eg.forward_outputs(model, tokens)
        with Phase(f"greedy generation of {n_new} tokens" + (", float64 logits teacher-forced" if f64 else ""), timings):
            if f64:  # the exporter's own generation reference: greedy in float32, the same tokens in float64
                gen_tokens, logits32, logits64 = eg.generation_outputs(model, tokens, n_new)
            else:
                gen_tokens, logits32 = llama_ref.greedy(model, tokens, n_new)
        if f64:
            with Phase("float64 copy and forward", timings):
                out64, cache64 = eg.forward_outputs(eg.as64(model), tokens)
    return out32, out64, cache32, cache64, gen_tokens, logits32, logits64


def write_fixtures(out_dir, model_attr, prompt, n_new, results, sha):
    out32, out64, cache32, cache64, gen_tokens, logits32, logits64 = results
    tokens = torch.tensor(prompt, dtype=torch.float32)
    with eg.open_fixture(out_dir, "model/forward.h5", "model", sha) as f:
        eg.write_attr(f, "model", model_attr)
        eg.write_case(f, 0, f"{len(prompt)}-token prompt, every intermediate at every position", {}, {"tokens": tokens},
                      out32, out64 or {})
    with eg.open_fixture(out_dir, "model/kv_cache.h5", "model", sha) as f:
        eg.write_attr(f, "model", model_attr)
        eg.write_case(f, 0, f"keys and values cached after a {len(prompt)}-token prompt", {}, {"tokens": tokens},
                      cache32, cache64 or {})
    with eg.open_fixture(out_dir, "generation/greedy.h5", "generation", sha) as f:
        eg.write_attr(f, "model", model_attr)
        full, top = eg.generation_logits(logits32, logits64 if logits64 is not None else logits32.double())
        ref64 = {"logits": full["logits64"], "topk_logits": top["logits64"]} if logits64 is not None else {}
        eg.write_case(f, 0, f"{n_new} greedy tokens after the {len(prompt)}-token prompt", {"max_new_tokens": n_new},
                      {"prompt": tokens, "full_steps": full["steps"]},
                      {"tokens": torch.tensor(gen_tokens, dtype=torch.float32), "logits": full["logits32"],
                       "topk_ids": top["ids"], "topk_logits": top["logits32"]}, ref64)


def request_of(args, files):
    """What the fixtures depend on: equal requests reuse the fixtures."""
    return {"manifest_version": MANIFEST_VERSION, "model": os.path.abspath(args.model), "files": files,
            "prompt_ids": args.prompt_ids, "generate": args.generate, "f64": not args.no_f64,
            "exporter_sha256": exporter_sha256(), "torch_version": torch.__version__,
            "transformers_version": transformers.__version__}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="Hugging Face directory, llm.c or llama2.c float32 checkpoint")
    ap.add_argument("--prompt-ids", required=True, help="comma-separated token ids")
    ap.add_argument("--generate", type=int, default=16, help="greedy tokens after the prompt")
    ap.add_argument("--out", required=True, help="fixture folder")
    ap.add_argument("--no-f64", action="store_true", help="no float64 truth (halves time and memory; no accuracy ratio)")
    args = ap.parse_args()
    prompt = [int(x) for x in args.prompt_ids.split(",")]
    if args.generate < 1:
        raise SystemExit("verify_ref: --generate must be at least 1")

    torch.set_num_threads(1)  # deterministic reductions, as the exporter
    torch.use_deterministic_algorithms(True)
    fmt = detect_format(args.model)
    t0 = time.perf_counter()
    files = {os.path.basename(p): sha256_file(p) for p in model_files(args.model)}
    request = request_of(args, files)
    manifest_path = os.path.join(args.out, "manifest.json")
    if os.path.exists(manifest_path) and all(os.path.exists(os.path.join(args.out, f)) for f in FIXTURES):
        with open(manifest_path) as f:
            old = json.load(f)
        fixture_sha = {f: sha256_file(os.path.join(args.out, f)) for f in FIXTURES}
        if old.get("request") == request and old.get("fixtures") == fixture_sha:
            progress(f"reusing the reference fixtures in {args.out} (model files, prompt and exporter unchanged; "
                     f"made in {old.get('seconds', 0):.1f} s)")
            return
    progress(f"hashing the model files took {time.perf_counter() - t0:.1f} s")

    timings = {}
    with Phase(f"loading {args.model} ({fmt})", timings):
        family, model, what = load_reference(args.model, fmt)
    progress(f"reference: {what}, family {family}")
    results = run_reference(family, model, fmt, prompt, args.generate, not args.no_f64, timings)
    write_fixtures(args.out, os.path.abspath(args.model), prompt, args.generate, results, request["exporter_sha256"])
    seconds = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    manifest = {"request": request, "format": fmt, "family": family, "reference": what,
                "fixtures": {f: sha256_file(os.path.join(args.out, f)) for f in FIXTURES},
                "reference_tokens": results[4], "seconds": round(seconds, 2), "phases": timings,
                "peak_rss_mb": round(peak_mb)}
    with open(manifest_path, "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    progress(f"reference done in {seconds:.1f} s, peak memory {peak_mb:.0f} MB; fixtures in {args.out}")


if __name__ == "__main__":
    main()
