"""The package's import graph: rooms (modules, package __init__ files included), floors (the longest
chain of imports), arrows (imports between its modules); fails on an import loop.
Usage: python scripts/import_graph.py [checkout root, default .]"""
import ast, sys, pathlib, functools
root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "."); pkg = root / "gnrepro"
mods = {}
for f in pkg.rglob("*.py"):
    name = ".".join(f.relative_to(root).with_suffix("").parts)
    if name.endswith(".__init__"): name = name[:-9]
    mods[name] = f
edges = set()
for name, f in mods.items():
    tree = ast.parse(f.read_text())
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import): targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module if node.level == 0 else None
            if base: targets = [base] + [f"{base}.{a.name}" for a in node.names]
        for t in targets:
            while t and t not in mods: t = t.rpartition(".")[0]
            if t and t != name and t.startswith("gnrepro") and t != "gnrepro": edges.add((name, t))
out = {}
for a, b in edges: out.setdefault(a, set()).add(b)
@functools.lru_cache(None)
def floor(m, stack=()):
    if m in stack: raise SystemExit(f"loop: {stack + (m,)}")
    return 1 + max((floor(d, stack + (m,)) for d in out.get(m, ())), default=0)
floors = max(floor(m) for m in mods)
commands = {f"gnrepro.{c}" for c in ("train", "evaluate", "plan", "report", "torchrun")}
up = sorted((a, b) for a, b in edges if b in commands)
print(f"rooms {len(mods)} floors {floors} arrows {len(edges)}; no import loop; imports of a command: {up or 'none'}")
