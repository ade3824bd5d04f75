"""Derives engine/swap/face_topology.json from the MediaPipe 0.10.21 wheel (Apache-2.0).

The wheel ships the 468-point face mesh as edge lists (FACEMESH_TESSELATION and named regions),
not triangles. Triangles are the 3-cliques of the tessellation graph minus separating triangles
(3-cycles whose every edge already borders two faces); the result is a manifold of 852 faces
with three holes (eyes and mouth). Region edge lists are chained into ordered loops.

Usage: .venv/bin/python scripts/derive_face_topology.py
"""
from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
import tempfile
import zipfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "engine" / "swap" / "face_topology.json"


def _edges(source: str, name: str) -> list[tuple[int, int]]:
    match = re.search(name + r"\s*=\s*frozenset\(\[(.*?)\]\)", source, re.S)
    return [tuple(map(int, pair)) for pair in re.findall(r"\((\d+),\s*(\d+)\)", match.group(1))]


def _loops(edges: list[tuple[int, int]]) -> list[list[int]]:
    """Chains undirected edges into closed loops (each vertex has degree 2 in a loop)."""
    neighbours: dict[int, list[int]] = {}
    for a, b in edges:
        neighbours.setdefault(a, []).append(b)
        neighbours.setdefault(b, []).append(a)
    seen: set[int] = set()
    loops = []
    for start in sorted(neighbours):
        if start in seen:
            continue
        loop, previous, current = [start], None, start
        seen.add(start)
        while True:
            options = [n for n in neighbours[current] if n != previous]
            nxt = options[0] if options else None
            if nxt is None or nxt == start:
                break
            if nxt in seen:
                break
            loop.append(nxt)
            seen.add(nxt)
            previous, current = current, nxt
        loops.append(loop)
    return loops


def _orient(triangles: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """Gives every triangle the same winding: neighbours must traverse their shared edge in
    opposite directions (breadth-first over the manifold). The global sign is arbitrary; the
    engine compares each face's triangle signs with the face's majority at run time."""
    by_edge: dict[frozenset, list[int]] = {}
    for index, tri in enumerate(triangles):
        for edge in itertools.combinations(tri, 2):
            by_edge.setdefault(frozenset(edge), []).append(index)
    oriented: dict[int, tuple[int, int, int]] = {}
    for seed in range(len(triangles)):
        if seed in oriented:
            continue
        oriented[seed] = triangles[seed]
        queue = [seed]
        while queue:
            current = oriented[queue.pop()]
            directed = {(current[0], current[1]), (current[1], current[2]), (current[2], current[0])}
            for a, b in directed:
                for neighbour in by_edge[frozenset((a, b))]:
                    if neighbour in oriented:
                        continue
                    x, y, z = triangles[neighbour]
                    candidate = (x, y, z)
                    if {(x, y), (y, z), (z, x)} & directed:
                        candidate = (x, z, y)
                    oriented[neighbour] = candidate
                    queue.append(neighbour)
    return [oriented[i] for i in range(len(triangles))]


def derive(source: str) -> dict:
    tessellation = {frozenset(e) for e in _edges(source, "FACEMESH_TESSELATION")}
    adjacency: dict[int, set[int]] = {i: set() for i in range(468)}
    for a, b in (tuple(e) for e in tessellation):
        adjacency[a].add(b)
        adjacency[b].add(a)
    cliques = {
        (a, b, c)
        for a in range(468)
        for b in adjacency[a]
        if b > a
        for c in adjacency[a] & adjacency[b]
        if c > b
    }
    uses = Counter(frozenset(e) for t in cliques for e in itertools.combinations(t, 2))
    crowded = {e for e, n in uses.items() if n > 2}
    separating = {t for t in cliques if all(frozenset(e) in crowded for e in itertools.combinations(t, 2))}
    triangles = _orient(sorted(cliques - separating))
    assert len(triangles) == 852, len(triangles)
    lips = _loops(_edges(source, "FACEMESH_LIPS"))
    # The outer lip loop is the one containing the mouth corners' outer points (61, 291) and 0 (upper lip top).
    outer = next(loop for loop in lips if 0 in loop)
    inner = next(loop for loop in lips if loop is not outer)
    regions = {
        "face_oval": _loops(_edges(source, "FACEMESH_FACE_OVAL"))[0],
        "lips_outer": outer,
        "lips_inner": inner,
        "left_eye": _loops(_edges(source, "FACEMESH_LEFT_EYE"))[0],
        "right_eye": _loops(_edges(source, "FACEMESH_RIGHT_EYE"))[0],
        "left_eyebrow": sorted({i for e in _edges(source, "FACEMESH_LEFT_EYEBROW") for i in e}),
        "right_eyebrow": sorted({i for e in _edges(source, "FACEMESH_RIGHT_EYEBROW") for i in e}),
        "nose": sorted({i for e in _edges(source, "FACEMESH_NOSE") for i in e}),
    }
    return {
        "source": "mediapipe==0.10.21 mediapipe/python/solutions/face_mesh_connections.py (Apache-2.0)",
        "triangles": [list(t) for t in triangles],
        "regions": regions,
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
             "--platform", "manylinux_2_28_x86_64", "--python-version", "3.11", "--implementation", "cp",
             "--abi", "cp311", "mediapipe==0.10.21", "-d", tmp],
            check=True,
        )
        wheel = next(Path(tmp).glob("mediapipe-*.whl"))
        source = zipfile.ZipFile(wheel).read("mediapipe/python/solutions/face_mesh_connections.py").decode()
    OUT.write_text(json.dumps(derive(source), separators=(",", ":")) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
