"""Every Python and shell code block of README.md runs as written.

Rules, read from the README itself:

* Fenced blocks tagged `python`, `bash`, `sh` or `shell` are run; others are text.
* All blocks run in order in one temporary folder, so a block may use a file an earlier
  block wrote (`dist.json` of the command-line section is used by the sweep).
* `<!-- readme-test: continues -->` on the line before a fence prepends the previous Python
  block (a snippet that goes on with the names the one before it defined).
* `<!-- readme-test: skip (REASON) -->` skips a block, reported with its reason: installing
  from scratch, running this suite, a GPU, or minutes of compute.
* `<!-- readme-test: small A->B -->` replaces the text `A` by `B` when the environment
  variable `MLNC_README_SMALL` is set (the default here): the same code at a smaller size.
  The README keeps the size a user runs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
_FENCE = re.compile(r"^```(\w*)\s*$")
_MARK = re.compile(r"^<!--\s*readme-test:\s*(skip|continues|small)\s*(.*?)\s*-->\s*$")
RUNNABLE = {"python": "python", "bash": "bash", "sh": "bash", "shell": "bash"}


def readme_blocks(text: str) -> list[dict]:
    """`[{"lang", "code", "line", "skip", "continues", "small"}]` in README order."""
    lines, blocks, i = text.splitlines(), [], 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        marks = {}
        k = i - 1
        while k >= 0 and _MARK.match(lines[k]):
            kind, arg = _MARK.match(lines[k]).groups()
            marks.setdefault(kind, []).append(arg)
            k -= 1
        if m.group(1) in RUNNABLE:
            blocks.append(
                {
                    "lang": RUNNABLE[m.group(1)],
                    "code": "\n".join(lines[i + 1 : j]) + "\n",
                    "line": i + 1,
                    "skip": (marks.get("skip") or [None])[0],
                    "continues": "continues" in marks,
                    "small": marks.get("small", []),
                }
            )
        i = j + 1
    return blocks


BLOCKS = readme_blocks(README.read_text())


def _source(index: int) -> str:
    b = BLOCKS[index]
    code = b["code"]
    if b["continues"]:
        prev = max(i for i in range(index) if BLOCKS[i]["lang"] == "python")
        code = _source(prev) + code
    if os.environ.get("MLNC_README_SMALL", "1") != "0":
        for rule in b["small"]:
            old, _, new = rule.partition("->")
            assert old in code, (
                f"README line {b['line']}: small rule {rule!r} matches nothing"
            )
            code = code.replace(old, new)
    return code


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("readme")


def test_readme_has_runnable_blocks():
    assert sum(b["skip"] is None for b in BLOCKS) >= 8


@pytest.mark.parametrize(
    "index", range(len(BLOCKS)), ids=[f"line{b['line']}-{b['lang']}" for b in BLOCKS]
)
def test_readme_block_runs(index, workdir):
    b = BLOCKS[index]
    if b["skip"] is not None:
        pytest.skip(f"README line {b['line']}: {b['skip']}")
    bindir = os.path.dirname(sys.executable)
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        MLNC_README_SMALL="1",
        PATH=bindir + os.pathsep + os.environ.get("PATH", ""),
        MLNC_CACHE_DIR=str(workdir / ".cache"),
    )  # blocks share compiled programs
    script = workdir / f"block{index}.{'py' if b['lang'] == 'python' else 'sh'}"
    script.write_text(_source(index))
    cmd = (
        [sys.executable, str(script)]
        if b["lang"] == "python"
        else ["bash", "-euo", "pipefail", str(script)]
    )
    out = subprocess.run(
        cmd,
        check=False,
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, (
        f"README line {b['line']} failed:\n{out.stdout[-1500:]}\n{out.stderr[-3000:]}"
    )
