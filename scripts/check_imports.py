#!/usr/bin/env python3
"""The import graph of the package scripts/lmlab_ref has no cycle (ctest refs.imports). Standard
library only: it parses every module's imports (ast), never imports them.

    python3 scripts/check_imports.py [--graph]

An edge A -> B is A importing B, or something from B, at any depth of A's code (a function's
import counts too: the cycle is there all the same). Importing a submodule a.b also runs a's
__init__, so a.b depends on a. Prints each cycle found and exits 1; --graph prints the edges.
"""
import argparse
import ast
import os
import sys

PACKAGE = "lmlab_ref"
SCRIPTS_DIR = os.path.dirname(os.path.abspath(__file__))


def modules():
    """module name -> path, for every *.py of the package."""
    out = {}
    for root, dirs, files in os.walk(os.path.join(SCRIPTS_DIR, PACKAGE)):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for f in sorted(files):
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(root, f), SCRIPTS_DIR)[:-len(".py")].split(os.sep)
                out[".".join(rel[:-1] if rel[-1] == "__init__" else rel)] = os.path.join(root, f)
    return out


def imports(name, path, known):
    """The package modules that module `name` imports."""
    is_package = path.endswith("__init__.py")
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's package
                base = name.split(".")[:len(name.split(".")) - node.level + (1 if is_package else 0)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            # "from a import b": b is a submodule of a, or a name defined in a
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
        else:
            continue
        for t in targets:
            parts = t.split(".")
            for i in range(1, len(parts) + 1):  # a.b.c runs a's and a.b's __init__ too
                if ".".join(parts[:i]) in known:
                    found.add(".".join(parts[:i]))
    found.discard(name)
    return found


def cycles(graph):
    """Every elementary cycle found by a depth-first search, each once (rotated to its least name)."""
    seen, found = set(), []

    def visit(node, path, on_path):
        for nxt in sorted(graph[node]):
            if nxt in on_path:
                cyc = path[path.index(nxt):]
                i = cyc.index(min(cyc))
                key = tuple(cyc[i:] + cyc[:i])
                if key not in seen:
                    seen.add(key)
                    found.append(list(key))
            elif len(path) < len(graph):
                visit(nxt, path + [nxt], on_path | {nxt})
    for start in sorted(graph):
        visit(start, [start], {start})
    return found


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--graph", action="store_true", help="print every edge")
    args = ap.parse_args()
    mods = modules()
    graph = {m: imports(m, p, mods) for m, p in mods.items()}
    # a package's __init__ runs before its submodules: a.b -> a is the import machinery's, not a
    # cycle, unless a's __init__ imports a.b back (then a.b -> a -> a.b is reported)
    if args.graph:
        for m in sorted(graph):
            print(f"{m} -> {', '.join(sorted(graph[m])) or '(nothing of the package)'}")
    found = cycles(graph)
    for c in found:
        print("import cycle: " + " -> ".join(c + [c[0]]))
    print(f"check_imports: {len(mods)} modules of {PACKAGE}, {sum(map(len, graph.values()))} imports, "
          f"{len(found)} cycles")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
