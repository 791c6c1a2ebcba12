"""The reference side of `lmlab verify`: runs the reference on a user's own checkpoint and writes
fixtures in the golden format (the same case formats as the golden recipes: fixtures.py), which
lmlab's model, KV-cache, prefill and generation stages of the model's family then read.

The reference is someone else's code wherever that exists, through the family's module
(families/: load(path, fmt)):
  - a Hugging Face directory: transformers' own class for its config.json model_type (the
    families' hf_model_types in `lmlab list --json`: GPT2LMHeadModel, LlamaForCausalLM,
    Qwen2ForCausalLM, Qwen2MoeForCausalLM, MixtralForCausalLM; eager attention, float32);
  - an llm.c float32 checkpoint: transformers' GPT2LMHeadModel with its weights;
  - a llama2.c float32 checkpoint: our llama_ref.py (llama2.c has no PyTorch class of its own;
    llama_ref is cross-checked against transformers' LlamaForCausalLM, ctest refs.selfcheck);
  - a GGUF file: transformers' own GGUF loading (it dequantizes every weight to float32), with its
    known bugs worked around visibly (gguf_models.load: docs/models.md lists them).
Float64 truth: GPT-2 and llama2.c from the same model in float64; the LLaMA-style decoders from
llama_ref.py in float64 on the same weights (+ MoeRef for the MoE models: transformers keeps
RMSNorm, softmax and RoPE in float32 even in a float64 copy), after checking that llama_ref in
float32 computes what transformers computes.

Writes into the output folder: model/forward.h5 (every intermediate at every prompt position),
model/kv_cache.h5, generation/greedy.h5 (N greedy tokens, logits at every step), and
manifest.json (the model files with their sha256, the prompt, N, the exporter's sha256, timings,
peak memory). A rerun whose model files, prompt, N, --no-f64 and exporter are unchanged reuses
them and says so. Progress goes to stderr, one line per phase with its time.
"""
import json
import os
import resource
import sys
import time

import torch
import transformers

from lmlab_ref import common, fixtures, gguf_models, lmlab
from lmlab_ref.families import family, gpt2

MANIFEST_VERSION = 1
FIXTURES = ("model/forward.h5", "model/kv_cache.h5", "generation/greedy.h5")
FORMAT_FAMILY = {"llmc": "gpt2", "llama2c": "llama"}  # the families of the single-file formats


def progress(msg):
    print(f"verify: {msg}", file=sys.stderr, flush=True)


class Phase:
    """`with Phase("float32 forward", timings):` prints the phase, then its time."""

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
    if len(head) >= 4 and int.from_bytes(head[:4], "little") == gpt2.LLMC_MAGIC:
        return "llmc"
    if head[:4] == b"GGUF":
        return "gguf"
    if head[:4] == b"ak42":
        raise SystemExit(f"verify_ref: {path} is a llama2.c int8 (ak42) file; verify compares float weights with "
                         "a float reference: verify the float32 checkpoint it was exported from")
    return "llama2c"


def family_of(path, fmt, table):
    """The family of a checkpoint: a Hugging Face directory's config.json model_type among the
    families' hf_model_types; a single file's by its format."""
    if fmt == "gguf":
        return gguf_models.family_of_file(path)
    if fmt != "hf":
        return FORMAT_FAMILY[fmt]
    config = os.path.join(path, "config.json")
    with open(config) as f:
        model_type = json.load(f).get("model_type")
    name = table.family_of_model_type(model_type)
    if name is None:
        raise SystemExit(f"verify_ref: {config}: model_type {model_type!r} is not one of {table.hf_model_types()}")
    return name


def model_files(path):
    """The files that define the computation: config.json, the safetensors (and their index), or the
    checkpoint file. Tokenizer files are not part of it (verify takes token ids)."""
    if not os.path.isdir(path):
        return [path]
    names = sorted(n for n in os.listdir(path)
                   if n == "config.json" or n.endswith(".safetensors") or n.endswith(".safetensors.index.json"))
    return [os.path.join(path, n) for n in names]


# ---- The reference run --------------------------------------------------------------------------

def run_reference(ref, names, prompt, n_new, f64, timings):
    """(out32, out64, cache32, cache64, greedy tokens, logits32, logits64); the float64 ones None
    without f64."""
    tokens = torch.tensor(prompt, dtype=torch.long)
    out64 = cache64 = logits64 = None
    with Phase(f"float32 forward of {len(prompt)} tokens, every intermediate", timings):
        out32, cache32 = ref.forward_intermediates(tokens, names)
    with Phase(f"greedy generation of {n_new} tokens", timings):
        gen_tokens, logits32 = ref.greedy(tokens, n_new)
    if f64:
        with Phase("float64 truth", timings):
            # its KV cache for the positions this run uses, not a 32768-token context's (1.6 GB in float64)
            progress(ref.make_truth(tokens, names, max_positions=len(prompt) + n_new))
        with Phase("float64 forward and teacher-forced generation logits", timings):
            out64, cache64 = ref.truth_intermediates(tokens, names)
            logits64 = ref.truth_logits(tokens, gen_tokens)
    return out32, out64, cache32, cache64, gen_tokens, logits32, logits64


def write_fixtures(out_dir, model_attr, prompt, results, sha):
    out32, out64, cache32, cache64, gen_tokens, logits32, logits64 = results
    tokens = torch.tensor(prompt, dtype=torch.float32)
    with fixtures.open_fixture(out_dir, "model/forward.h5", "model", sha, model_attr) as f:
        fixtures.forward_case(f, tokens, out32, out64 or {})
    with fixtures.open_fixture(out_dir, "model/kv_cache.h5", "model", sha, model_attr) as f:
        fixtures.kv_cache_case(f, tokens, cache32, cache64 or {})
    with fixtures.open_fixture(out_dir, "generation/greedy.h5", "generation", sha, model_attr) as f:
        fixtures.greedy_case(f, f"{len(gen_tokens)} greedy tokens after the {len(prompt)}-token prompt", tokens,
                             gen_tokens, logits32, logits64)


def run(model, prompt, n_new, out_dir, f64, binary):
    """The reference run of `lmlab verify` (scripts/verify_ref.py's arguments)."""
    if n_new < 1:
        raise SystemExit("verify_ref: --generate must be at least 1")
    common.setup_torch()  # deterministic reductions, as the exporter
    table = lmlab.Table(binary)
    fmt = detect_format(model)
    t0 = time.perf_counter()
    files = {os.path.basename(p): lmlab.sha256_file(p) for p in model_files(model)}
    request = {"manifest_version": MANIFEST_VERSION, "model": os.path.abspath(model), "files": files,
               "prompt_ids": ",".join(map(str, prompt)), "generate": n_new, "f64": f64,
               "exporter_sha256": lmlab.exporter_sha256(binary), "torch_version": torch.__version__,
               "transformers_version": transformers.__version__}
    manifest_path = os.path.join(out_dir, "manifest.json")
    if os.path.exists(manifest_path) and all(os.path.exists(os.path.join(out_dir, f)) for f in FIXTURES):
        with open(manifest_path) as f:
            old = json.load(f)
        fixture_sha = {f: lmlab.sha256_file(os.path.join(out_dir, f)) for f in FIXTURES}
        if old.get("request") == request and old.get("fixtures") == fixture_sha:
            progress(f"reusing the reference fixtures in {out_dir} (model files, prompt and exporter unchanged; "
                     f"made in {old.get('seconds', 0):.1f} s)")
            return
    progress(f"hashing the model files took {time.perf_counter() - t0:.1f} s")

    timings = {}
    name = family_of(model, fmt, table)
    with Phase(f"loading {model} ({fmt})", timings):
        ref = gguf_models.load(model, name) if fmt == "gguf" else family(name, model).load(model, fmt)
    progress(f"reference: {ref.what}, family {name}")
    results = run_reference(ref, table.intermediates(name), prompt, n_new, f64, timings)
    write_fixtures(out_dir, os.path.abspath(model), prompt, results, request["exporter_sha256"])
    seconds = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    manifest = {"request": request, "format": fmt, "family": name, "reference": ref.what,
                "fixtures": {f: lmlab.sha256_file(os.path.join(out_dir, f)) for f in FIXTURES},
                "reference_tokens": results[4], "seconds": round(seconds, 2), "phases": timings,
                "peak_rss_mb": round(peak_mb)}
    with open(manifest_path, "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    progress(f"reference done in {seconds:.1f} s, peak memory {peak_mb:.0f} MB; fixtures in {out_dir}")
