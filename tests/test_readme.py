"""Every Python block of the README runs.

The README's ```` ```python ```` blocks are read in order and grouped by their ``## ``
section: the blocks of one section run one after another in one namespace (a section reads
as one session: the Chip API block builds ``experiment``, later blocks use it), each section
in a fresh namespace and a fresh temporary working directory, so that files a block writes
(``seed.h5``, ``inputs.npz``) land there. A block added to the README is picked up without
touching this file. A block that cannot run here (it needs a real board, say) is preceded
by the line ``<!-- readme-test: skip -->`` in the README, and is reported as skipped.
Sections whose code uses the Brian2 backend carry the ``brian2`` marker.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
SKIP_MARK = "<!-- readme-test: skip -->"
_FENCE = re.compile(r"^```\s*(\S*)\s*$")


@dataclasses.dataclass
class Block:
    line: int      # 1-based line of the block's first code line in the README
    code: str
    skip: bool


def python_blocks(text: str) -> dict[str, list[Block]]:
    """``## `` section title -> its ```python blocks, in README order (sections without
    Python blocks are left out)."""
    groups: dict[str, list[Block]] = {}
    section, lang, start, body, previous = "(top)", None, 0, [], ""
    for number, line in enumerate(text.splitlines(), start=1):
        fence = _FENCE.match(line)
        if lang is None:
            if fence:
                lang, start, body = fence.group(1).lower(), number + 1, []
                skip = previous.strip() == SKIP_MARK
            elif line.startswith("## "):
                section = line[3:].strip()
            if line.strip():
                previous = line
            continue
        if fence and not fence.group(1):
            if lang == "python":
                groups.setdefault(section, []).append(Block(start, "\n".join(body) + "\n", skip))
            lang = None
            previous = line
        else:
            body.append(line)
    if lang is not None:
        raise AssertionError(f"README.md: the ``` block opened at line {start - 1} is never closed")
    return groups


def run_blocks(blocks: list[Block], filename: str = str(README)) -> dict:
    """Run ``blocks`` in one namespace; an error points at the README line it came from."""
    namespace: dict = {"__name__": "__readme__"}
    for block in blocks:
        if block.skip:
            continue
        # leading newlines put the block's lines at their README line numbers in tracebacks
        code = compile("\n" * (block.line - 1) + block.code, filename, "exec")
        exec(code, namespace)  # noqa: S102  (the README is ours)
    return namespace


GROUPS = python_blocks(README.read_text(encoding="utf-8"))


def _params():
    for title, blocks in GROUPS.items():
        marks = [pytest.mark.brian2] if any("brian2" in b.code for b in blocks) else []
        yield pytest.param(title, marks=marks, id=title)


@pytest.mark.parametrize("title", list(_params()))
def test_readme_section_runs(title, tmp_path, monkeypatch):
    blocks = GROUPS[title]
    if any("brian2" in b.code for b in blocks) and importlib.util.find_spec("brian2") is None:
        pytest.skip("brian2 is not installed (pip install '.[brian2]')")
    monkeypatch.chdir(tmp_path)
    run_blocks(blocks)
    skipped = [b.line for b in blocks if b.skip]
    if skipped:
        pytest.skip(f"ran all but the blocks at README lines {skipped} (marked {SKIP_MARK})")


def test_the_readme_has_python_blocks():
    # the User guide alone has the Chip API, Params, backends, torch, recordings and board blocks
    assert sum(len(b) for b in GROUPS.values()) >= 8, GROUPS.keys()


def test_extraction_groups_by_section_and_skips_other_languages():
    text = "\n".join([
        "# title", "```python", "a = 1", "```",
        "## One", "```bash", "not python", "```", "```python", "b = a", "```",
        "    ```python", "    indented: part of a list, not a block", "    ```",
        SKIP_MARK, "```python", "raise RuntimeError('needs a board')", "```",
        "## Two", "```python", "", "c = 3", "```",
    ])
    groups = python_blocks(text)
    assert list(groups) == ["(top)", "One", "Two"]
    assert [b.code for b in groups["One"]] == ["b = a\n", "raise RuntimeError('needs a board')\n"]
    assert [b.skip for b in groups["One"]] == [False, True]
    assert groups["Two"][0].line == 21 and groups["Two"][0].code == "\nc = 3\n"
    # one namespace per section: a name from another section is not defined
    with pytest.raises(NameError, match="'a' is not defined"):
        run_blocks(groups["One"], "text.md")
    assert run_blocks(groups["Two"], "text.md")["c"] == 3


def test_an_error_points_at_its_readme_line():
    groups = python_blocks("## S\n```python\nx = 1\ny = undefined_name\n```\n")
    with pytest.raises(NameError) as info:
        run_blocks(groups["S"], "text.md")
    frame = info.traceback[-1]
    assert str(frame.path) == "text.md" and frame.lineno + 1 == 4
