"""The package's floors (../shared/STYLE.md): a folder imports only from the folders below it.

Every `import genjax...` and `from genjax... import ...` in every module is checked, those
inside functions included (a lazy import is still a dependency).
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "genjax"
# Bottom to top: a folder may import its own floor and every floor before it.
FLOORS = (
    "core",
    "nn",
    "data",
    "objectives",
    "flows",
    "evaluate",
    "models",
    "train",
    "workbench",
)


def _floor(module: str) -> str | None:
    """'genjax.models.vae' -> 'models'; None for the package root."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _imports(path: pathlib.Path) -> list[tuple[int, str]]:
    """(line, module) of every genjax import in a file, the imported names resolved to their
    submodule when they are one (`from genjax import models` -> 'genjax.models')."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("genjax")]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("genjax"):
            if node.module == "genjax":
                found += [(node.lineno, f"genjax.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, node.module))
    return found


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE)


def test_every_folder_is_a_known_floor():
    folders = {p.relative_to(PACKAGE).parts[0] for p in _modules()}
    assert folders == set(FLOORS)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_import_runs_up_a_floor(path):
    own = path.relative_to(PACKAGE).parts[0]
    upward = [
        f"line {line}: {module} ({_floor(module)}/ is above {own}/)"
        for line, module in _imports(path)
        if _floor(module) is not None and FLOORS.index(_floor(module)) > FLOORS.index(own)
    ]
    assert not upward, "\n".join(upward)


def test_the_check_sees_an_upward_import(tmp_path):
    module = tmp_path / "bad.py"
    module.write_text("def f():\n    from genjax.train import loop\n")
    assert _imports(module) == [(2, "genjax.train")]
