#!/usr/bin/env python3
"""Fail when a crate's modules import each other in a cycle.

Usage: python3 ci/module-cycles.py CRATE_SRC_DIR... [--graph]

For every pair of sibling modules (children of the same parent, at every depth), module A
depends on sibling B when any non-test file under A names a path into B (`crate::b::…`,
`super::b::…`, or a `use` of it). A cycle among siblings is reported with the files and
lines that make each edge. Paths into an ancestor (`super::Item` defined in a `mod.rs`)
are not edges: a parent module is its children's interface, not a sibling. Test code
(`tests.rs` files and `#[cfg(test)]` items) is left out, as the architecture allows.

`--graph` also prints each level's edges, which is how ARCHITECTURE.md's code map was
checked. Standard library only, so CI runs it with the system's Python.
"""

import os
import re
import sys

USE_RE = re.compile(r"\buse\s+((?:crate|super|self)\b[^;]*);", re.S)
PATH_RE = re.compile(r"\b((?:crate|super|self)(?:::[A-Za-z_][A-Za-z0-9_]*)+)")


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r"//[^\n]*", lambda m: " " * len(m.group(0)), text)
    # String literals may hold `crate::` in messages; blank them but keep line numbers.
    return re.sub(r'"(?:\\.|[^"\\])*"', lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)


def strip_cfg_test(text):
    """Blank every item under `#[cfg(test)]` (a `mod … { … }` block or `mod x;`)."""
    out = list(text)
    for m in re.finditer(r"#\[cfg\(test\)\]", text):
        i = m.end()
        depth = 0
        while i < len(text):
            c = text[i]
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    i += 1
                    break
            elif c == ";" and depth == 0:
                i += 1
                break
            i += 1
        for k in range(m.start(), i):
            if out[k] != "\n":
                out[k] = " "
    return "".join(out)


def expand_use(tree):
    """Expand `a::{b, c::{d, e}}` into full paths (glob and rename parts dropped)."""
    tree = re.sub(r"\s+", "", tree)

    def split_top(s):
        parts, depth, cur = [], 0, ""
        for c in s:
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
            if c == "," and depth == 0:
                parts.append(cur)
                cur = ""
            else:
                cur += c
        if cur:
            parts.append(cur)
        return parts

    def go(prefix, s):
        i = s.find("{")
        if i < 0:
            s = s.split("as")[0] if "::" not in s.split("as")[-1] else s
            return [prefix + s.rstrip(":")]
        head = s[:i]
        inner = s[i + 1 : s.rindex("}")]
        paths = []
        for part in split_top(inner):
            if part in ("self", ""):
                paths.append((prefix + head).rstrip(":"))
            else:
                paths.extend(go(prefix + head, part))
        return paths

    return [p.replace("::*", "") for p in go("", tree)]


def module_of(src, path):
    """The module path (list of names) a source file defines."""
    rel = os.path.relpath(path, src)[: -len(".rs")].split(os.sep)
    if rel[-1] in ("lib", "main", "mod"):
        rel = rel[:-1]
    return rel


def resolve(module, file_is_mod_rs, path):
    """Turn `crate::a::b` / `super::b` / `self::b` seen in `module` into an absolute list."""
    segs = path.split("::")
    if segs[0] == "crate":
        base, segs = [], segs[1:]
    else:
        base = list(module)
        while segs and segs[0] in ("self", "super"):
            if segs[0] == "super":
                base = base[:-1]
            segs = segs[1:]
    return base + segs


def collect(src):
    modules = set()
    edges = {}  # (from_mod, to_mod) -> [where]
    files = []
    for root, _, names in os.walk(src):
        for name in names:
            if name.endswith(".rs") and name != "tests.rs" and not root.endswith("/tests"):
                files.append(os.path.join(root, name))
    for path in files:
        mod = module_of(src, path)
        if os.path.basename(path) == "main.rs":
            continue  # The binary is its own crate; it may use any module.
        modules.add(tuple(mod))
    for path in sorted(files):
        if os.path.basename(path) == "main.rs":
            continue
        mod = module_of(src, path)
        text = strip_cfg_test(strip_comments(open(path, encoding="utf-8").read()))
        refs = []
        for m in USE_RE.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            for p in expand_use(m.group(1)):
                refs.append((line, p))
        body = USE_RE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)
        for m in PATH_RE.finditer(body):
            refs.append((body.count("\n", 0, m.start()) + 1, m.group(1)))
        for line, p in refs:
            target = resolve(mod, path.endswith("mod.rs"), p)
            edges.setdefault(tuple(mod), []).append((tuple(target), f"{path}:{line}"))
    return modules, edges


def sibling_edges(modules, edges):
    """Map each parent to edges between its children: {parent: {(a, b): [where]}}."""
    out = {}
    for src_mod, refs in edges.items():
        for target, where in refs:
            # Longest known module that prefixes the target path.
            t = target
            while t and t not in modules:
                t = t[:-1]
            # Find the common parent of src_mod and t, then the two children under it.
            k = 0
            while k < len(src_mod) and k < len(t) and src_mod[k] == t[k]:
                k += 1
            if k == len(t) or k == len(src_mod):
                continue  # A path into an ancestor or into one's own subtree.
            parent = src_mod[:k]
            a, b = src_mod[: k + 1], t[: k + 1]
            out.setdefault(parent, {}).setdefault((a, b), []).append(where)
    return out


def find_cycles(edge_map):
    graph = {}
    for a, b in edge_map:
        graph.setdefault(a, set()).add(b)
    cycles, state, stack = [], {}, []

    def dfs(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                cycles.append(stack[stack.index(m) :] + [m])
            elif m not in state:
                dfs(m)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            dfs(n)
    return cycles


def name(mod):
    return "::".join(mod) or "crate"


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    show = "--graph" in sys.argv
    if not args:
        print(__doc__)
        return 64
    failed = False
    for src in args:
        modules, edges = collect(src)
        levels = sibling_edges(modules, edges)
        for parent in sorted(levels):
            edge_map = levels[parent]
            if show:
                print(f"{src} {name(parent)}:")
                for a, b in sorted(edge_map):
                    print(f"  {name(a)} -> {name(b)}")
            for cycle in find_cycles(edge_map):
                failed = True
                print(f"{src}: import cycle: " + " -> ".join(name(m) for m in cycle))
                for a, b in zip(cycle, cycle[1:]):
                    print(f"    {name(a)} -> {name(b)} at {edge_map[(a, b)][0]}")
        if not failed:
            print(f"{src}: no import cycle among {len(modules)} modules")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
