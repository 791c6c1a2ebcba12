#!/usr/bin/env python3
"""Writes lmlab's golden fixtures: the references' answers for every stage, as HDF5 files.

    .venv/bin/python scripts/export_golden.py [--out golden] [--only GLOB] [--one-per-recipe] [--lmlab build/default/lmlab]

The list of stages comes from the lmlab binary (`lmlab list --json`, the stage table in
harness/stages/stages.cpp): each row names its level, family, model, fixture and recipe; the
fixture is written once even when several stages share it. The exporter is the package
scripts/lmlab_ref (lmlab_ref.export; how each recipe is made: lmlab_ref.recipes). golden/README.md
documents the files.
"""
import argparse
import fnmatch
import os

from lmlab_ref import export, lmlab


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(lmlab.REPO_DIR, "golden"), help="output folder (default: golden/)")
    ap.add_argument("--shared", default=lmlab.default_shared_dir(),
                    help="folder with models/ and tokenizers/ (default: $LMLAB_SHARED or ../shared)")
    ap.add_argument("--only", default="*", help="export only stages matching this glob (manifest still lists all files present)")
    ap.add_argument("--one-per-recipe", action="store_true",
                    help="only the first fixture of each recipe (the determinism test's sample of every way a fixture is made)")
    ap.add_argument("--lmlab", default=lmlab.default_lmlab(),
                    help="the lmlab binary whose stage table to export (default: build/default/lmlab)")
    args = ap.parse_args()
    # mistakes refused before any work, by the option (exit 2): a named --shared that is not there would
    # record every shared file as absent; an --only that matches nothing would write an empty manifest
    # (the default folder may be absent, and the stages that need it are then skipped; scripts/golden_status.py
    # passes it by name)
    if not os.path.isdir(args.shared) and os.path.abspath(args.shared) != os.path.abspath(lmlab.default_shared_dir()):
        ap.error(f"--shared {args.shared}: not a folder (give the folder that holds models/ and tokenizers/)")
    ids = [row["id"] for row in lmlab.Table(args.lmlab).stages]
    if not any(fnmatch.fnmatch(i, args.only) for i in ids):
        ap.error(f"--only '{args.only}' matches no stage id (ids look like kernel.rope or model.forward.*; "
                 f"`lmlab list` shows them): nothing to export")
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as e:
        ap.error(f"--out {args.out}: cannot make the folder ({e.strerror})")
    export.export(args.out, args.shared, args.only, args.lmlab, args.one_per_recipe)


if __name__ == "__main__":
    main()
