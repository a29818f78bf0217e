"""The layout of ARCHITECTURE.md holds: stages import only downwards, no import circles,
every module sits in its stage's folder, functions fit on a screen, public names import."""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

import mlnc_jax

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "mlnc_jax"
# bottom to top: a module may import its own stage and the stages before it
STAGES = ["model", "io", "theory", "engine", "analysis", "networks", "app"]
MAX_LINES = 50  # per function, its docstring not counted


def _modules() -> dict[str, Path]:
    mods = {}
    for f in PKG.rglob("*.py"):
        parts = list(f.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = f
    return mods


def _imports(name: str, f: Path, mods) -> set[str]:
    """Package modules that `name` imports (at any depth: lazy imports count too)."""
    base = name.split(".") if f.name == "__init__.py" else name.split(".")[:-1]
    out = set()
    for n in ast.walk(ast.parse(f.read_text())):
        if isinstance(n, ast.ImportFrom):
            if n.level:
                b = base[: len(base) - (n.level - 1)]
                mod = ".".join(b + ([n.module] if n.module else []))
            else:
                mod = n.module or ""
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in mods else mod for a in n.names]
        elif isinstance(n, ast.Import):
            targets = [a.name for a in n.names]
        else:
            continue
        for t in targets:
            while t and t not in mods:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def _rank(name: str) -> int:
    parts = name.split(".")
    if len(parts) == 1:
        return len(STAGES)  # the package's public surface sits above everything
    if parts[1] == "_version":
        return -1
    return STAGES.index(parts[1])


MODS = _modules()
GRAPH = {m: _imports(m, f, MODS) for m, f in MODS.items()}


def test_every_module_is_in_a_stage_folder():
    loose = [m for m in MODS if m.count(".") == 1 and m.split(".")[1] not in STAGES
             and m.split(".")[1] != "_version"]
    assert not loose, loose


def test_imports_point_down_the_stages():
    up = sorted((a, b) for a, deps in GRAPH.items() for b in deps if _rank(b) > _rank(a))
    assert not up, up


def test_no_import_circle():
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for d in GRAPH[m]:
            if state.get(d) == 1:
                pytest.fail("import circle: " + " -> ".join(path[path.index(d):] + [d]))
            if d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m, [m])


def _long_functions(folder: Path):
    for f in sorted(folder.rglob("*.py")):
        for n in ast.walk(ast.parse(f.read_text())):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = n.end_lineno - n.lineno + 1
                doc = n.body[0] if n.body and isinstance(n.body[0], ast.Expr) and \
                    isinstance(getattr(n.body[0], "value", None), ast.Constant) and \
                    isinstance(n.body[0].value.value, str) else None
                if doc is not None:
                    lines -= doc.end_lineno - doc.lineno + 1
                if lines > MAX_LINES:
                    yield f"{f.relative_to(ROOT)}:{n.lineno} {n.name} ({lines} lines)"


@pytest.mark.parametrize("folder", ["mlnc_jax", "experiments"])
def test_functions_fit_on_a_screen(folder):
    long = list(_long_functions(ROOT / folder))
    assert not long, long


def test_every_public_name_imports():
    missing = [n for n in mlnc_jax.__all__ if not hasattr(mlnc_jax, n)]
    assert not missing, missing
    assert len(set(mlnc_jax.__all__)) == len(mlnc_jax.__all__)


def test_the_readmes_imports_work():
    from test_readme import BLOCKS

    seen = 0
    for block in (b for b in BLOCKS if b["lang"] == "python"):
        for n in ast.walk(ast.parse(block["code"])):
            if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("mlnc_jax"):
                m = importlib.import_module(n.module)
                for a in n.names:
                    ok = hasattr(m, a.name) or importlib.util.find_spec(f"{n.module}.{a.name}")
                    assert ok, f"README: from {n.module} import {a.name}"
                    seen += 1
            elif isinstance(n, ast.Import):
                for a in n.names:
                    if a.name.startswith("mlnc_jax"):
                        importlib.import_module(a.name)
                        seen += 1
    assert seen >= 5


def test_architecture_md_names_every_stage_folder():
    text = (ROOT / "ARCHITECTURE.md").read_text()
    for stage in STAGES:
        assert f"{stage}/" in text, stage
    for m in MODS:
        parts = m.split(".")
        if len(parts) == 3:
            assert parts[2] in text, f"ARCHITECTURE.md does not mention {m}"


def test_every_cited_theory_section_is_in_docs_theory():
    import re
    headings = set(re.findall(r"^#{2,3} (§\d+[a-z]?) ", (ROOT / "docs" / "THEORY.md").read_text(),
                              re.M))
    cited = set()
    for f in [*PKG.rglob("*.py"), *(ROOT / "experiments").rglob("*.py"), ROOT / "README.md"]:
        for m in re.finditer(r"THEORY((?:[ ,]+(?:and )?§\d+[a-z]?)+)", f.read_text()):
            cited |= set(re.findall(r"§\d+[a-z]?", m.group(1)))
    assert cited, "no citations found: the pattern is wrong"
    assert cited <= headings, sorted(cited - headings)
    for doc in ("README.md", "ARCHITECTURE.md"):
        assert "docs/THEORY.md" in (ROOT / doc).read_text(), doc
