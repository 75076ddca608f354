"""The modules of dynacal.hardware import one another one way only (issue 11 item 4)."""

from __future__ import annotations

import ast
from pathlib import Path

HARDWARE = Path(__file__).resolve().parents[2] / "hardware"


def _imports(root: Path) -> dict[str, set[str]]:
    """Module name (relative to ``root``, dotted) -> the modules of ``root`` it imports, at any
    level of the file (lazy imports inside functions count: they are cycles too)."""
    names = {".".join(p.relative_to(root).with_suffix("").parts): p for p in root.rglob("*.py")}
    graph = {}
    for name, path in names.items():
        package = name.split(".")[:-1]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dynacal.hardware"):
                base = node.module.removeprefix("dynacal.hardware").lstrip(".")
            else:
                continue
            for target in (base, *(f"{base}.{a.name}".lstrip(".") for a in node.names)):
                if target in names and target != name:
                    deps.add(target)
        graph[name] = deps
    return graph


def test_the_import_graph_is_read():
    graph = _imports(HARDWARE)
    assert "biasgen" in graph["dacfile"]            # dacfile builds on the DAC model
    assert "fake_samna.device" in graph            # subpackages are walked


def test_no_two_hardware_modules_import_each_other():
    graph = _imports(HARDWARE)
    pairs = sorted((a, b) for a in graph for b in graph[a]
                   if a < b and a in graph.get(b, ()) and not b.startswith(a.removesuffix("__init__")))
    assert not pairs, f"modules that import each other: {pairs}"
