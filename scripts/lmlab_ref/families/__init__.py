"""One module per model family, keyed by the family's name in `lmlab list --json` (the C++ family
rows, model/family.h). Every module has the same interface:

    NAME                  the family's name
    build(key, ctx)       the reference of a stage row's model (key: its `model` column), built
                          and written once per export; a common.Reference
    load(path, fmt)       the reference of a user's checkpoint (`lmlab verify`; fmt "hf", "llmc",
                          "llama2c"), a common.Reference

and the Reference it returns computes forward_intermediates / layer_case / greedy and their
float64 truth (common.Reference). qwen2moe and mixtral share their implementation (moe.py).
"""
from lmlab_ref import common
from lmlab_ref.families import gpt2, llama, mistral, mixtral, qwen2, qwen2moe

FAMILIES = {m.NAME: m for m in (llama, gpt2, qwen2, qwen2moe, mixtral, mistral)}


def family(name, what):
    """The family module of name; SystemExit naming what asked for it when there is none."""
    if name not in FAMILIES:
        raise SystemExit(f"lmlab_ref: {what}: no reference for family '{name}' (families: {', '.join(FAMILIES)})")
    return FAMILIES[name]


def reference(row, ctx, key=None):
    """The reference of a stage row's model (or of key, another model of the row's family); None,
    with a message, when a ../shared file it needs is absent (the harness then skips the stage)."""
    try:
        return family(row["family"], f"stage {row['id']}").build(key or row["model"], ctx)
    except common.Missing as e:
        print(f"export_golden: {row['fixture']} skipped: {e.path} not found")
        return None
