"""The reference half of `lmlab verify`: runs the reference on a user's own checkpoint and writes
fixtures in the golden format, which lmlab's model, KV-cache, prefill and generation stages then
read. `lmlab verify` calls this script (with --lmlab: itself); run by hand it is

    .venv/bin/python scripts/verify_ref.py --model DIR_OR_FILE --prompt-ids 1,403,407 --generate 16 --out DIR

What runs as the reference, and what it writes: lmlab_ref/verify.py.
"""
import argparse

from lmlab_ref import lmlab, verify


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="Hugging Face directory, llm.c or llama2.c float32 checkpoint")
    ap.add_argument("--prompt-ids", required=True, help="comma-separated token ids")
    ap.add_argument("--generate", type=int, default=16, help="greedy tokens after the prompt")
    ap.add_argument("--out", required=True, help="fixture folder")
    ap.add_argument("--no-f64", action="store_true", help="no float64 truth (halves time and memory; no accuracy ratio)")
    ap.add_argument("--lmlab", default=lmlab.default_lmlab(),
                    help="the lmlab binary (its family rows and exporter hash; default: build/default/lmlab)")
    args = ap.parse_args()
    try:
        prompt = [int(x) for x in args.prompt_ids.split(",")]
    except ValueError:
        raise SystemExit(f"verify_ref: --prompt-ids {args.prompt_ids!r}: expected comma-separated integers")
    verify.run(args.model, prompt, args.generate, args.out, not args.no_f64, args.lmlab)


if __name__ == "__main__":
    main()
