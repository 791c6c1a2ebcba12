"""Writing golden fixtures: HDF5 files, their cases and attributes (format in golden/README.md),
manifest.json, and the case formats that more than one writer shares: the model forward, the KV
cache and greedy generation (the exporter's recipes and `lmlab verify`'s reference write them the
same way, so that the same stage functions read both).

Deterministic: groups remember their creation order and no object records a timestamp, so two
exports give identical bytes.
"""
import hashlib
import json
import os

import h5py
import numpy as np
import torch

from lmlab_ref import common
from lmlab_ref.lmlab import sha256_file

FORMAT_VERSION = 1  # = kFormatVersion in harness/fixture.cpp


def fixed_utf8(values):
    """Strings as fixed-length UTF-8 (NUL-padded to the longest), never variable-length: a damaged
    variable-length string lives in HDF5's global heap and can crash libhdf5 inside the read."""
    raw = [v.encode("utf-8") for v in values]
    return np.array(raw, dtype=h5py.string_dtype("utf-8", max([1] + [len(b) for b in raw])))


def write_attr(obj, key, value):
    if isinstance(value, str):
        a = fixed_utf8([value])
        obj.attrs.create(key, a[0], dtype=a.dtype)
    elif isinstance(value, bool):
        obj.attrs[key] = np.int64(value)
    elif isinstance(value, int):
        obj.attrs[key] = np.int64(value)
    elif isinstance(value, float):
        obj.attrs[key] = np.float64(value)
    elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        obj.attrs.create(key, fixed_utf8(value))
    else:
        obj.attrs[key] = np.asarray(value)


def write_dataset(group, name, tensor, dtype):
    arr = tensor.detach().cpu().numpy().astype(dtype)
    group.create_dataset(name, data=arr, track_times=False)


def _ordered_untimed(plist):
    """Property list: remember creation order (h5ls/h5dump show groups as written) and store no
    timestamps (HDF5 records object times by default, which would make every export differ)."""
    plist.set_obj_track_times(False)
    plist.set_link_creation_order(h5py.h5p.CRT_ORDER_TRACKED | h5py.h5p.CRT_ORDER_INDEXED)
    return plist


def create_group(parent, name):
    gid = h5py.h5g.create(parent.id, name.encode(), gcpl=_ordered_untimed(h5py.h5p.create(h5py.h5p.GROUP_CREATE)))
    return h5py.Group(gid)


def open_fixture(out_dir, fixture, level, sha, model=None):
    """Creates out_dir/fixture with the root attributes: fixture (that relative path: the harness
    checks it), level, format_version, torch_version, seed, exporter_sha256, and model when given."""
    path = os.path.join(out_dir, fixture)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fcpl = _ordered_untimed(h5py.h5p.create(h5py.h5p.FILE_CREATE))
    f = h5py.File(h5py.h5f.create(path.encode(), h5py.h5f.ACC_TRUNC, fcpl=fcpl))
    write_attr(f, "fixture", fixture)
    write_attr(f, "level", level)
    write_attr(f, "format_version", FORMAT_VERSION)
    write_attr(f, "torch_version", torch.__version__)
    write_attr(f, "seed", common.SEED)
    write_attr(f, "exporter_sha256", sha)
    if model is not None:
        write_attr(f, "model", model)
    return f


def write_case(f, index, desc, params, inputs, outputs, reference64, name=None):
    """case_<index> (or case_<name>: the conformance fixtures keep ONNX's case names): description and
    params as attributes; inputs and outputs as float32, reference64 as float64, each in dict order."""
    grp = create_group(f, f"case_{name}" if name else f"case_{index:03d}")
    write_attr(grp, "description", desc)
    for k, v in params.items():
        write_attr(grp, k, v)
    for sub, tensors, dtype in (("inputs", inputs, np.float32), ("outputs", outputs, np.float32),
                                ("reference64", reference64, np.float64)):
        sg = create_group(grp, sub)
        for name, t in tensors.items():
            write_dataset(sg, name, t, dtype)


def write_manifest(out_dir, sha, stage_table_raw, shared_dir):
    """manifest.json: every file under out_dir (fixtures and model files; not README.md) with its
    sha256, the exporter's and the stage table's hashes, and which ../shared files are there. It
    lists every file present, so a partial (--only) export keeps it whole."""
    os.makedirs(out_dir, exist_ok=True)  # (an export whose every fixture was skipped writes only this)
    files = {}
    for root, _, names in os.walk(out_dir):
        for name in sorted(names):
            rel = os.path.relpath(os.path.join(root, name), out_dir)
            if rel not in ("manifest.json", "README.md"):
                files[rel] = sha256_file(os.path.join(root, name))
    manifest = {"format_version": FORMAT_VERSION, "exporter_sha256": sha,
                "stages_sha256": hashlib.sha256(stage_table_raw).hexdigest(),
                "torch_version": torch.__version__, "seed": common.SEED, "files": dict(sorted(files.items())),
                "shared_files": {rel: os.path.exists(os.path.join(shared_dir, rel)) for rel in common.SHARED_FILES}}
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")


# ---- Case formats shared by the exporter and verify ------------------------------------------------

def forward_case(f, tokens, out32, out64):
    """model.forward's case: every intermediate at every position (out64: {} without a truth)."""
    write_case(f, 0, f"{len(tokens)}-token prompt, every intermediate at every position", {}, {"tokens": tokens},
               out32, out64)


def kv_cache_case(f, tokens, cache32, cache64):
    """model.kv_cache's case: cache_k, cache_v [layers, T, kv_dim] after the prompt."""
    write_case(f, 0, f"keys and values cached after a {len(tokens)}-token prompt", {}, {"tokens": tokens},
               cache32, cache64)


GEN_TOP_K = 16  # logits kept at every step: the reference's top 16 (ids and values)


def generation_logits(logits32, logits64):
    """What a generation fixture keeps of the [n_new, vocab] logits, so that a 151936-token
    vocabulary stays small: the full rows at three steps (first, middle, last) and, at every step,
    the reference's top-16 ids with their float32 and float64 values. The harness compares its own
    logits at those ids; the top-1/top-2 gap is what decides a near-tie."""
    n = logits32.shape[0]
    steps = sorted({0, n // 2, n - 1})
    top = torch.topk(logits32, min(GEN_TOP_K, logits32.shape[1]), dim=-1)
    full = {"steps": torch.tensor(steps, dtype=torch.float32), "logits32": logits32[steps], "logits64": logits64[steps]}
    return full, {"ids": top.indices.to(torch.float32), "logits32": top.values,
                  "logits64": torch.gather(logits64, 1, top.indices)}


def greedy_case(f, why, prompt, tokens, logits32, logits64):
    """generation.greedy's case: the greedy tokens, the full logits at three steps and the top 16 at
    every step (logits64 None: no reference64)."""
    full, top = generation_logits(logits32, logits64 if logits64 is not None else logits32.double())
    ref64 = {"logits": full["logits64"], "topk_logits": top["logits64"]} if logits64 is not None else {}
    write_case(f, 0, why, {"max_new_tokens": len(tokens)}, {"prompt": prompt, "full_steps": full["steps"]},
               {"tokens": torch.tensor(tokens, dtype=torch.float32), "logits": full["logits32"],
                "topk_ids": top["ids"], "topk_logits": top["logits32"]}, ref64)
