"""lmlab against llama.cpp's llama-bench on the same GGUF files: decode and prompt tokens/s, and how
close decode comes to the memory-bandwidth limit (issue 21's table).

    .venv/bin/python scripts/bench_vs_llamacpp.py                        # tiny LLaMA, 1 and 2 threads
    .venv/bin/python scripts/bench_vs_llamacpp.py --big                  # + GPT-2-124M and Qwen2.5-0.5B shapes
    .venv/bin/python scripts/bench_vs_llamacpp.py --llama-cpp DIR        # llama.cpp's build/bin (else $LLAMA_CPP_BIN)
    .venv/bin/python scripts/bench_vs_llamacpp.py --lmlab-fast ''       # without the fast preset's column

What it does, in order:
  1. the models, as Hugging Face directories in build/bench-llamacpp/ (ignored by git): the tiny LLaMA
     is the exporter's golden/models/tiny-llama-hf (42 MB, vocab 16384); --big adds the GPT-2-124M and
     Qwen2.5-0.5B shapes from scripts/make_random_hf.py (random weights, fixed seed; 0.5 and 2 GB).
     llama.cpp's converter needs a tokenizer: the tiny LLaMA gets a 512-piece SentencePiece model
     trained on this repository's docs (the converter pads the vocabulary to 16384), the big shapes
     the GPT-2 and Qwen tokenizers of ../shared/tokenizers. The timings feed token ids: the
     tokenizer's pieces do not matter.
  2. GGUF files, made by llama.cpp's own tools: convert_hf_to_gguf.py (--outtype f32 / f16), then
     `llama-quantize --pure` to Q8_0 and Q4_K (every matrix in the one type, the output too, as
     lmlab's `--quantize gguf-<type>` does). Without llama.cpp there are no files: lmlab then reads
     the HF directory and quantizes in memory (`--quantize gguf-<type>`, the same bytes as
     llama-quantize --pure writes), and the llama.cpp column stays empty.
  3. lmlab is timed twice when the fast preset is built: the default preset's binary (--lmlab, generic
     x86-64: the one the tests check) and the fast preset's (--lmlab-fast, -march=native: built for this
     CPU, as llama.cpp is). docs/performance.md says why the default stays portable.
  4. decode: a 1-token prompt and 128 new tokens (llama-bench -p 0 -n 128: tg128); prompt: 128 and
     512 tokens (-p 128 / -p 512 -n 0: pp128, pp512; lmlab generates 1 token after them and
     reports the prompt's tokens/s). Each is run --reps times; the median is printed (the machine
     is shared: the best of the runs is in the JSON output too).
  5. bandwidth: lmlab_bench's BM_stream (one core summing a 1 GiB float array) gives the bytes/s one
     core streams; decode reads every weight matrix once per token (the token embedding table only
     one row), so bytes of weights per token × tok/s over that is how close decode is to memory-bound.
     Models smaller than the caches can go past 100%.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "build" / "bench-llamacpp"

TYPES = ["F32", "F16", "Q8_0", "Q4_K"]
PROMPTS = [128, 512]
DECODE = 128


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def run(cmd, **kw):
    log("+", " ".join(str(c) for c in cmd))
    return subprocess.run([str(c) for c in cmd], check=True, **kw)


# ---- models --------------------------------------------------------------------------------------


def train_sp(out_dir):
    """A 512-piece SentencePiece BPE model trained on docs/*.md: the tiny LLaMA's converter input."""
    import sentencepiece as spm
    corpus = OUT / "sp_corpus.txt"
    with open(corpus, "w", encoding="utf-8") as f:
        for p in sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]:
            f.write(p.read_text(encoding="utf-8") + "\n")
    prefix = OUT / "sp512"
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(prefix), vocab_size=512, model_type="bpe",
                                   byte_fallback=True, character_coverage=1.0, num_threads=1, unk_id=0, bos_id=1,
                                   eos_id=2, pad_id=-1, minloglevel=2)
    shutil.copy(f"{prefix}.model", out_dir / "tokenizer.model")


def hf_dir(name, shared):
    """The Hugging Face directory of model `name`, made if missing."""
    d = OUT / name
    if (d / "config.json").exists():
        return d
    d.mkdir(parents=True, exist_ok=True)
    if name == "tiny-llama":
        src = ROOT / "golden" / "models" / "tiny-llama-hf"
        if not (src / "config.json").exists():
            sys.exit(f"bench_vs_llamacpp: {src} is missing: build first (cmake --build --preset default exports it)")
        for f in ("config.json", "generation_config.json", "model.safetensors"):
            shutil.copy(src / f, d / f)
        train_sp(d)
        return d
    shape = {"gpt2-124m": "gpt2-124m", "qwen2.5-0.5b": "qwen2-0.5b"}[name]
    run([sys.executable, ROOT / "scripts" / "make_random_hf.py", "--shape", shape, "--out", d])
    tok = Path(shared) / "tokenizers"
    if name == "gpt2-124m":  # GPT2Tokenizer's file names; the converter reads n_ctx, which transformers 4.46 no longer writes
        shutil.copy(tok / "gpt2" / "encoder.json", d / "vocab.json")
        shutil.copy(tok / "gpt2" / "vocab.bpe", d / "merges.txt")
        cfg = json.loads((d / "config.json").read_text())
        cfg["n_ctx"] = cfg["n_positions"]
        (d / "config.json").write_text(json.dumps(cfg, indent=2))
    else:
        for f in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(tok / "qwen" / f, d / f)
    return d


def gguf_files(name, d, llama_bin, converter):
    """{type: path} of the GGUF files of model `name`, made by llama.cpp's converter and quantizer."""
    files = {}
    for t in TYPES:
        p = OUT / f"{name}-{t.lower()}.gguf"
        if not p.exists():
            if t in ("F32", "F16"):
                run([sys.executable, converter, d, "--outtype", t.lower(), "--outfile", p], stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL)
            else:
                run([Path(llama_bin) / "llama-quantize", "--pure", OUT / f"{name}-f32.gguf", p, t],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        files[t] = p
    return files


def weight_bytes_per_token(gguf_path):
    """Bytes of weights one decode step reads: every tensor, except that the token embedding table is
    read one row at a time (unless it is also the output matrix: tied embeddings, no output.weight)."""
    from gguf import GGUFReader
    r = GGUFReader(str(gguf_path))
    names = {t.name: t for t in r.tensors}
    total = sum(int(t.n_bytes) for t in r.tensors)
    emb = names.get("token_embd.weight")
    if emb is not None and "output.weight" in names:
        total -= int(emb.n_bytes) - int(emb.n_bytes) // int(emb.shape[-1])
    return total


# ---- timing --------------------------------------------------------------------------------------


def lmlab_run(lmlab, model, quantize, n_prompt, n_gen, threads):
    cmd = [lmlab, "generate", "--model", model, "--prompt-ids", ",".join(["1"] * n_prompt), "--max-new-tokens",
           n_gen, "--threads", threads, "--json"]
    if quantize:
        cmd += ["--quantize", quantize]
    out = subprocess.run([str(c) for c in cmd], check=True, capture_output=True, text=True).stdout
    j = json.loads(out)
    return j["tokens_per_second"] if n_prompt == 1 else j["prompt_tokens_per_second"]


def lmlab_times(lmlab, model, quantize, test, threads, reps):
    # a prompt of 512 is timed as 511 tokens: the tiny LLaMA's context is 512 and lmlab refuses a
    # prompt that leaves no room for the one token it generates (llama-bench generates none)
    n_prompt, n_gen = (1, DECODE) if test == "tg" else (min(test, 511), 1)
    return [lmlab_run(lmlab, model, quantize, n_prompt, n_gen, threads) for _ in range(reps)]


def llama_times(llama_bin, model, test, threads, reps):
    pn = ["-p", "0", "-n", DECODE] if test == "tg" else ["-p", test, "-n", "0"]
    out = subprocess.run([str(c) for c in [Path(llama_bin) / "llama-bench", "-m", model, *pn, "-t", threads,
                                           "-r", reps, "-o", "json"]],
                         check=True, capture_output=True, text=True).stdout
    return [float(v) for v in json.loads(out)[0]["samples_ts"]]


def stream_bandwidth(bench):
    out = subprocess.run([str(bench), "--benchmark_filter=BM_stream", "--benchmark_format=json",
                          "--benchmark_repetitions=3"], check=True, capture_output=True, text=True).stdout
    rates = [b["bytes_per_second"] for b in json.loads(out)["benchmarks"] if b.get("run_type") == "iteration"]
    return max(rates)


# ---- the table -----------------------------------------------------------------------------------


def fmt(v, digits=None):
    """a rate with 0 decimals, or 1 below 100 (the big models' decode); a ratio with the digits asked"""
    if v is None:
        return ""
    return f"{v:,.{digits if digits is not None else (1 if v < 100 else 0)}f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lmlab", default=str(ROOT / "build" / "default" / "lmlab"))
    ap.add_argument("--lmlab-fast", default=str(ROOT / "build" / "fast" / "lmlab"),
                    help="the fast preset's lmlab, a second column (default build/fast/lmlab when it exists; '' for none)")
    ap.add_argument("--bench", default=None, help="lmlab_bench for BM_stream (default: next to --lmlab)")
    ap.add_argument("--llama-cpp", default=os.environ.get("LLAMA_CPP_BIN", ""),
                    help="llama.cpp's build/bin with llama-bench and llama-quantize (default $LLAMA_CPP_BIN; empty: "
                         "no llama.cpp column)")
    ap.add_argument("--converter", default=os.environ.get("LLAMA_CPP_CONVERT", ""),
                    help="a script running llama.cpp's convert_hf_to_gguf.py (default $LLAMA_CPP_CONVERT, else "
                         "convert_hf_to_gguf.py two levels above --llama-cpp)")
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"), help="../shared (tokenizers for --big)")
    ap.add_argument("--big", action="store_true", help="also the GPT-2-124M and Qwen2.5-0.5B shapes (0.5 and 2 GB)")
    ap.add_argument("--models", default="", help="only these of tiny-llama, gpt2-124m, qwen2.5-0.5b (comma-separated)")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--types", default=",".join(TYPES))
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json", help="also write every sample here")
    args = ap.parse_args()

    OUT.mkdir(parents=True, exist_ok=True)
    llama_bin = args.llama_cpp if args.llama_cpp and (Path(args.llama_cpp) / "llama-bench").exists() else ""
    converter = args.converter or (str(Path(llama_bin).parents[1] / "convert_hf_to_gguf.py") if llama_bin else "")
    if not llama_bin:
        log("bench_vs_llamacpp: no llama.cpp (--llama-cpp / $LLAMA_CPP_BIN): its column stays empty")
    bench = args.bench or str(Path(args.lmlab).parent / "lmlab_bench")
    fast = args.lmlab_fast if args.lmlab_fast and Path(args.lmlab_fast).exists() else ""
    if not fast:
        log("bench_vs_llamacpp: no fast preset (cmake --preset fast && cmake --build --preset fast): its column stays empty")
    bw = stream_bandwidth(bench)
    threads = [int(t) for t in args.threads.split(",")]
    types = args.types.split(",")
    models = ["tiny-llama"] + (["gpt2-124m", "qwen2.5-0.5b"] if args.big else [])
    if args.models:
        models = args.models.split(",")

    rows, samples = [], []
    for name in models:
        d = hf_dir(name, args.shared)
        files = gguf_files(name, d, llama_bin, converter) if llama_bin else {}
        for t in types:
            # lmlab: the GGUF file when there is one, else the HF directory quantized in memory
            model, quant = (files[t], None) if files else (d, None if t == "F32" else f"gguf-{t.lower()}")
            wbytes = weight_bytes_per_token(files[t]) if files else None
            for test in ["tg"] + PROMPTS:
                if test != "tg" and t not in ("F32", "Q8_0"):
                    continue  # the prompt rows: F32 and Q8_0
                for th in threads:
                    lm = lmlab_times(args.lmlab, model, quant, test, th, args.reps)
                    lf = lmlab_times(fast, model, quant, test, th, args.reps) if fast else []
                    lc = llama_times(llama_bin, files[t], test, th, args.reps) if llama_bin else []
                    med_lm = statistics.median(lm)
                    med_lf = statistics.median(lf) if lf else None
                    med_lc = statistics.median(lc) if lc else None
                    label = f"decode {t}" if test == "tg" else f"prompt {test} {t}"
                    best = max(med_lm, med_lf or 0)
                    bw_frac = wbytes * best / bw if (test == "tg" and wbytes) else None
                    rows.append((name, label, th, med_lc, med_lm, med_lf, wbytes, bw_frac, best))
                    samples.append(dict(model=name, test=label, threads=th, lmlab=lm, lmlab_fast=lf, llama_cpp=lc,
                                        weight_bytes=wbytes))
                    log(rows[-1])

    load = os.getloadavg()
    print(f"single-core streaming read (lmlab_bench BM_stream): {bw / 1e9:.1f} GB/s; "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; median of {args.reps} runs")
    print()
    print("| model | tok/s | threads | llama.cpp | lmlab | / llama.cpp | lmlab fast preset | / llama.cpp | "
          "weights MB/token | faster lmlab: GB/s of weights (% of stream) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, label, th, lc, lm, lf, wbytes, frac, best in rows:
        gbs = f"{wbytes * best / 1e9:.1f} ({100 * frac:.0f}%)" if frac is not None else ""
        print(f"| {name} | {label} | {th} | {fmt(lc)} | {fmt(lm)} | {fmt(lm / lc if lc else None, 2)} | {fmt(lf)} | "
              f"{fmt(lf / lc if lc and lf else None, 2)} | {fmt(wbytes / 1e6 if wbytes else None, 1)} | {gbs} |")
    if args.json:
        Path(args.json).write_text(json.dumps(dict(stream_bytes_per_second=bw, load=load, lmlab=args.lmlab, lmlab_fast=fast,
                                                    samples=samples), indent=1))


if __name__ == "__main__":
    main()
