#!/usr/bin/env python3
"""Fails when the library's `rust-version` is lower than that of any crate in its
default-feature dependency tree (normal and build dependencies, Linux target), as
`cargo metadata` reports them. Run from the workspace root."""
import json
import subprocess
import sys

TARGET = "x86_64-unknown-linux-gnu"


def version(v):
    parts = [int(p) for p in v.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


meta = json.loads(
    subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--filter-platform", TARGET],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
)
packages = {p["id"]: p for p in meta["packages"]}
nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
root = next(p for p in meta["packages"] if p["name"] == "shmsync")
ours = root.get("rust_version")
if not ours:
    sys.exit("shmsync has no rust-version in Cargo.toml")

seen, stack, worst = set(), [root["id"]], []
while stack:
    node = nodes[stack.pop()]
    for dep in node["deps"]:
        kinds = {k["kind"] for k in dep["dep_kinds"]}
        if not kinds & {None, "build"} or dep["pkg"] in seen:
            continue
        seen.add(dep["pkg"])
        stack.append(dep["pkg"])
        pkg = packages[dep["pkg"]]
        if pkg.get("rust_version"):
            worst.append((version(pkg["rust_version"]), pkg["name"], pkg["rust_version"]))

worst.sort(reverse=True)
names = ", ".join(f"{n} {v}" for _, n, v in worst[:3]) or "none declare one"
print(f"shmsync rust-version {ours}; {len(seen)} default-feature dependencies; highest: {names}")
too_new = [(n, v) for ver, n, v in worst if ver > version(ours)]
if too_new:
    sys.exit(
        "rust-version is lower than these dependencies need: "
        + ", ".join(f"{n} {v}" for n, v in too_new)
    )
