#!/usr/bin/env python3
"""The quantization cost table: each model quantized in memory to each of llama.cpp's types (as
`llama-quantize --pure` makes them), against its own float weights, by `lmlab verify --quantize`;
one markdown row per model and type from each run's report.json. Standard library only.

    python3 scripts/quant_cost.py [--lmlab build/default/lmlab] [--types q8_0,q6_k,q5_k,q4_k,q4_0]
                                  [--out reports/quant-cost] [MODEL ...]

Default models: stories260K (../shared, a trained model: its perplexity means something) and the
exporter's tiny models of every family (random weights: their perplexity on English is about their
vocabulary size, so read their KL divergence and top-1 agreement). A model without a tokenizer
(the tiny mixtures of experts) reads a fixed sequence of ids instead of the text.
"""
import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("LMLAB_SHARED") or os.path.join(ROOT, "..", "shared")
GOLDEN = os.path.join(ROOT, "golden", "models")
DEFAULT_MODELS = [os.path.join(SHARED, "models", "stories260K", "stories260K.gguf")] + [
    os.path.join(GOLDEN, m) for m in ("tiny-llama.h5", "tiny-gpt2", "tiny-qwen2", "tiny-qwen2moe", "tiny-mixtral")]
IDS_FOR = {"tiny-qwen2moe": 384, "tiny-mixtral": 384}  # no tokenizer: 200 ids below this vocabulary size


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lmlab", default=os.path.join(ROOT, "build", "default", "lmlab"))
    ap.add_argument("--types", default="q8_0,q6_k,q5_k,q4_k,q4_0")
    ap.add_argument("--out", default=os.path.join(ROOT, "reports", "quant-cost"))
    ap.add_argument("models", nargs="*", default=DEFAULT_MODELS)
    a = ap.parse_args()
    if not os.path.exists(a.lmlab):
        sys.exit(f"quant_cost: {a.lmlab} not found: build first (cmake --build --preset default)")
    print("| model | type | bits/weight | weights MB | KL mean | KL p99 | top-1 | perplexity (float) | most error added |")
    print("|---|---|---|---|---|---|---|---|---|")
    for model in a.models:
        name = os.path.basename(model.rstrip("/"))
        if not os.path.exists(model):
            print(f"| {name} | (not found: {model}) | | | | | | | |")
            continue
        for t in a.types.split(","):
            out = os.path.join(a.out, f"{name}-{t}")
            cmd = [a.lmlab, "verify", "--model", model, "--quantize", f"gguf-{t}", "--out", out]
            if name in IDS_FOR:
                cmd += ["--prompt-ids", ",".join(str((7 * i + 3) % IDS_FOR[name]) for i in range(200))]
            p = subprocess.run(cmd, capture_output=True, text=True)
            if p.returncode != 0:
                sys.exit(f"quant_cost: {' '.join(cmd)} failed ({p.returncode}):\n{p.stderr}")
            with open(os.path.join(out, "report.json")) as f:
                r = json.load(f)
            matrices = [s for s in r["types"] if s["type"] != "F32"]
            bits = 8 * sum(s["bytes"] for s in matrices) / max(1, sum(s["weights"] for s in matrices))
            worst = max(r["tensors"], key=lambda x: x["added"])
            ppl = r["perplexity"]
            print(f"| {name} | {t.upper()} | {bits:.2f} | {r['weight_bytes']['model'] / 1e6:.2f} | {r['kl']['mean']:.4g} | "
                  f"{r['kl']['p99']:.4g} | {100 * r['top1_agreement']:.1f}% | {ppl['model']:.4g} ({ppl['against']:.4g}) | "
                  f"{worst['tensor']} ({worst['type']}, {100 * worst['added']:.2g}%) |", flush=True)


if __name__ == "__main__":
    main()
