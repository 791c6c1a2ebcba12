"""Forward hooks that capture named intermediates from a model's own modules (never a re-computation):
each key collects one tensor per call of its module.

Where an intermediate is seen is a table per kind of block: name -> (submodule path inside the
block, "in" for the module's first input or "out" for its output; "" is the block itself). The
names asked for come from the family's row of `lmlab list --json`; a name a table cannot place is
the caller's to capture, or an error.
"""
import torch


def _first(x):
    return x[0] if isinstance(x, tuple) else x


class Recorder:
    """key -> list of captured tensors, one per forward call of the hooked module. take(t) picks
    what to keep of a captured tensor (transformers' modules: batch row 0)."""

    def __init__(self, take=lambda t: t):
        self.values, self.handles, self.take = {}, [], take

    def put(self, key, t):
        self.values.setdefault(key, []).append(self.take(t.detach()).clone())

    def out(self, module, key):
        """The module's output (the first element of a tuple output)."""
        self.handles.append(module.register_forward_hook(lambda m, inp, out: self.put(key, _first(out))))

    def inp(self, module, key):
        """The module's first positional input."""
        self.handles.append(module.register_forward_pre_hook(lambda m, inp: self.put(key, inp[0])))

    def place(self, block, prefix, names, where):
        """Hooks, for each name found in where (name -> (path, "in" | "out")), that submodule of block
        under the key prefix + name. Returns the names where has no place for, in order."""
        rest = []
        for name in names:
            if name not in where:
                rest.append(name)
                continue
            path, side = where[name]
            module = block.get_submodule(path) if path else block
            (self.out if side == "out" else self.inp)(module, prefix + name)
        return rest

    def one(self, key):
        """The value of a key captured exactly once (one full-sequence forward)."""
        v = self.values.get(key, [])
        assert len(v) == 1, f"{key}: captured {len(v)} times"
        return v[0]

    def stacked(self, key):
        """A key captured once per token: [n_tokens, ...]."""
        return torch.stack(self.values[key])

    def remove(self):
        for h in self.handles:
            h.remove()
        self.handles = []


def unplaced(names, what):
    """SystemExit for intermediates no table places."""
    if names:
        raise SystemExit(f"lmlab_ref: {what} has no capture point for intermediate(s) {', '.join(names)} "
                         "(from `lmlab list --json`): add them to its table of hooks")
