"""The exporter: for each distinct fixture of the stage table (`lmlab list --json`; stages may share
a fixture, the first row that names it is the one made), the recipe its row names writes it; then
manifest.json lists every file under the output folder with its sha256.

Deterministic: every stage draws from its own torch.Generator seeded from SEED and a fixed name,
torch runs single-threaded, and HDF5 object timestamps are off, so two exports give identical bytes.
"""
import fnmatch
import time

from lmlab_ref import common, fixtures, lmlab
from lmlab_ref.families import family
from lmlab_ref.recipes import RECIPES


def export(out_dir, shared_dir, only, binary, one_per_recipe=False):
    """Writes the fixtures of the stages matching the glob only into out_dir; returns the paths.
    one_per_recipe: only the first such fixture of each recipe, and of each recipe on a GGUF model
    (written by gguf_models, not by a family module): ctest golden.deterministic's sample of every
    way a fixture is made, in a fraction of the full export's time."""
    common.setup_torch()
    table = lmlab.Table(binary)
    ctx = common.Context(out_dir, lmlab.exporter_sha256(binary), shared_dir, table)
    rows = {}  # fixture -> the first stage row that names it
    for row in table.stages:
        if fnmatch.fnmatch(row["id"], only):
            rows.setdefault(row["fixture"], row)
    if one_per_recipe:
        first = {}
        for fixture, row in rows.items():
            first.setdefault((row["recipe"], row["model"].endswith(".gguf")), fixture)
        rows = {fixture: rows[fixture] for fixture in first.values()}
    for row in rows.values():  # refuse what we cannot make before making anything
        if row["recipe"] not in RECIPES:
            raise SystemExit(f"export_golden: stage {row['id']} ({row['fixture']}): unknown recipe '{row['recipe']}' "
                             f"(known: {', '.join(sorted(RECIPES))})")
        if row["family"]:
            family(row["family"], f"stage {row['id']} ({row['fixture']})")
    t0 = time.perf_counter()
    written = []
    for fixture, row in rows.items():
        t = time.perf_counter()
        written.extend(RECIPES[row["recipe"]](row, ctx))
        print(f"export_golden: {fixture:<34} {time.perf_counter() - t:5.2f} s")
    fixtures.write_manifest(out_dir, ctx.sha, table.raw, shared_dir)
    print(f"export_golden: wrote {len(written)} fixture files to {out_dir} in {time.perf_counter() - t0:.1f} s")
    return written
