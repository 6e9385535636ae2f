"""Every fenced ```python block in README.md and docs/*.md runs as written.

Each block is executed on its own, in a fresh namespace, so a block must carry its own imports
and inputs (tiny shapes, so the whole module takes seconds). The test ids are "file:line" of
the opening fence, and a traceback points at the block's own line in the Markdown file.

The blocks run with JAX's non-partitionable threefry (`jax.threefry_partitionable(False)`, the
default before JAX 0.5): the same PRNG and key API, other random bits, and on CPU about half
the compile time of the partitionable lowering, most of what these blocks cost. Nothing here
checks the blocks' values, and the setting is restored after each block.
"""

import pathlib
import re
import textwrap

import jax
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_OPENING = re.compile(r"^(\s*)```python\s*$")
_CLOSING = re.compile(r"^\s*```\s*$")


def python_blocks(path: pathlib.Path) -> list[tuple[int, str]]:
    """(line of the opening fence, 1-based; the block's source) for each ```python block."""
    lines = path.read_text().splitlines()
    blocks = []
    index = 0
    while index < len(lines):
        if _OPENING.match(lines[index]):
            start = index
            index += 1
            while index < len(lines) and not _CLOSING.match(lines[index]):
                index += 1
            if index == len(lines):
                raise ValueError(f"{path}:{start + 1}: the ```python block is never closed")
            blocks.append((start + 1, textwrap.dedent("\n".join(lines[start + 1 : index]))))
        index += 1
    return blocks


BLOCKS = [
    pytest.param(path, line, source, id=f"{path.relative_to(ROOT)}:{line}")
    for path in DOCUMENTS
    for line, source in python_blocks(path)
]


def test_blocks_are_found():
    """The fence scanner sees the documentation's blocks (an empty list would test nothing)."""
    assert BLOCKS


@pytest.mark.slow  # about 30 s of compiling on 2 CPU cores; CI runs the slow set
@pytest.mark.parametrize(("path", "line", "source"), BLOCKS)
def test_block_runs(path: pathlib.Path, line: int, source: str):
    # Padding puts each statement on its line in the Markdown file, for the traceback.
    code = compile("\n" * line + source, str(path), "exec")
    with jax.threefry_partitionable(False):
        exec(code, {"__name__": "__docs__"})
