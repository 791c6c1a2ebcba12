#!/usr/bin/env python3
"""Are the golden fixtures current? Standard library only (of the package: lmlab_ref.lmlab), so the
build can ask on every run without importing torch.

    .venv/bin/python scripts/golden_status.py [--golden DIR] [--shared DIR] [--lmlab BIN] [--ensure]

Current means golden/manifest.json was written by the exporter as it is now (exporter_sha256: what
`lmlab exporter-sha256` prints, the hash of the package scripts/lmlab_ref defined once in
harness/fixture.cpp) for the stage table as it is now (stages_sha256: sha256 of `lmlab list --json`,
the only list of stages), every listed file is present with its listed sha256, and each ../shared
file the exporter looked for is still present or absent as it was then (stages that need ../shared
are exported only when it is there). --ensure re-exports when anything is off; the build's `golden`
target runs it, so editing the exporter, deleting or damaging a fixture, or adding ../shared all
lead to a fresh export on the next build.
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys

from lmlab_ref.lmlab import REPO_DIR, SCRIPTS_DIR, Table, default_lmlab, default_shared_dir, exporter_sha256, sha256_file


def stale_reason(golden_dir, shared_dir, lmlab):
    """None when current, else why not."""
    path = os.path.join(golden_dir, "manifest.json")
    if not os.path.exists(path):
        return "none exported yet (first build)"
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        return f"{path} unreadable ({e})"
    if manifest.get("exporter_sha256") != exporter_sha256(lmlab):
        return "the exporter (scripts/lmlab_ref) changed"
    if manifest.get("stages_sha256") != hashlib.sha256(Table(lmlab).raw).hexdigest():
        return "the stage table (harness/stages/stages.cpp) changed"
    files = manifest.get("files") or {}
    if not files:
        return "the manifest lists no files"
    for rel, digest in files.items():
        full = os.path.join(golden_dir, rel)
        if not os.path.exists(full):
            return f"{rel} is missing"
        if sha256_file(full) != digest:
            return f"{rel} changed since export"
    for rel, was_present in (manifest.get("shared_files") or {}).items():
        if os.path.exists(os.path.join(shared_dir, rel)) != was_present:
            return f"{os.path.join(shared_dir, rel)} is now {'present' if not was_present else 'absent'}"
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--golden", default=os.path.join(REPO_DIR, "golden"))
    ap.add_argument("--shared", default=default_shared_dir())
    ap.add_argument("--lmlab", default=default_lmlab(), help="the lmlab binary (its stage table and exporter hash)")
    ap.add_argument("--ensure", action="store_true", help="re-export when not current")
    args = ap.parse_args()
    reason = stale_reason(args.golden, args.shared, args.lmlab)
    if reason is None:
        print(f"golden fixtures in {args.golden} are current")
        return 0
    print(f"golden fixtures are not current: {reason}")
    if not args.ensure:
        return 1
    cmd = [sys.executable, os.path.join(SCRIPTS_DIR, "export_golden.py"), "--out", args.golden, "--shared", args.shared,
           "--lmlab", args.lmlab]
    return subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(main())
