"""What the references need from the lmlab binary, and the paths around the repository. Standard
library only: scripts/golden_status.py imports this module (and nothing else of the package) on
every build, without torch.

The binary is the one source of three things:
  - `lmlab list --json`: the stage table (each row's id, level, family, int8 flag, model, fixture
    and recipe) and the family rows (name, Hugging Face model_types, the intermediates of one
    block in pipeline order, the kernels it calls): the references never keep their own lists;
  - `lmlab exporter-sha256`: the exporter's hash, which every fixture and manifest.json records
    (harness/fixture.cpp exporter_sha256: every *.py under scripts/lmlab_ref/, by relative path).
"""
import hashlib
import json
import os
import re
import subprocess

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
SCRIPTS_DIR = os.path.dirname(PACKAGE_DIR)
REPO_DIR = os.path.dirname(SCRIPTS_DIR)

STAGE_FIELDS = ("id", "level", "family", "int8", "model", "fixture", "recipe")
FAMILY_FIELDS = ("name", "about", "hf_model_types", "intermediates", "kernels")


def default_lmlab():
    return os.path.join(REPO_DIR, "build", "default", "lmlab")


def default_shared_dir():
    return os.environ.get("LMLAB_SHARED", os.path.join(os.path.dirname(REPO_DIR), "shared"))


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _run(binary, *args):
    if not os.path.exists(binary):
        raise SystemExit(f"{binary} not found: build it first (cmake --build --preset default), or pass --lmlab PATH. "
                         "The references take the stage table and the exporter's hash from it.")
    return subprocess.run([binary, *args], check=True, capture_output=True).stdout


def exporter_sha256(binary):
    """The exporter's hash as `lmlab exporter-sha256` prints it (the one definition: harness/fixture.cpp)."""
    out = _run(binary, "exporter-sha256").decode().strip()
    if not re.fullmatch(r"[0-9a-f]{64}", out):
        raise SystemExit(f"{binary} exporter-sha256 printed {out[:80]!r}, not a sha256 in hex")
    return out


class Table:
    """`lmlab list --json` of one binary: .raw (the bytes as printed: their sha256 is the manifest's
    stages_sha256), .stages (the rows, table order), .families (name -> family row)."""

    def __init__(self, binary):
        self.binary = binary
        self.raw = _run(binary, "list", "--json")
        what = f"{binary} list --json"
        try:
            doc = json.loads(self.raw)
        except ValueError as e:
            raise SystemExit(f"{what}: not JSON ({e})")
        if not isinstance(doc, dict) or not isinstance(doc.get("stages"), list) or not isinstance(doc.get("families"), list):
            raise SystemExit(f"{what}: expected an object with lists 'stages' and 'families'")
        for kind, rows, fields in (("stage", doc["stages"], STAGE_FIELDS), ("family", doc["families"], FAMILY_FIELDS)):
            for i, row in enumerate(rows):
                missing = [k for k in fields if not isinstance(row, dict) or k not in row]
                if missing:
                    raise SystemExit(f"{what}: {kind} row {i} ({str(row)[:80]}) has no {', '.join(missing)}")
        self.stages = doc["stages"]
        self.families = {f["name"]: f for f in doc["families"]}

    def family(self, name):
        if name not in self.families:
            raise SystemExit(f"{self.binary} list --json: no family '{name}' (families: {', '.join(self.families)})")
        return self.families[name]

    def intermediates(self, name):
        """The family's intermediates of one block, in pipeline order ("in", "attn_norm", ..., "out")."""
        return list(self.family(name)["intermediates"])

    def family_of_model_type(self, model_type):
        """The family whose hf_model_types holds a config.json's model_type, or None."""
        return next((f for f, row in self.families.items() if model_type in row["hf_model_types"]), None)

    def hf_model_types(self):
        return sorted(t for row in self.families.values() for t in row["hf_model_types"])
