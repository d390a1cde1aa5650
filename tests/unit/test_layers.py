"""The package layout as a rule: lower layers never import higher ones."""

import ast
from pathlib import Path

import pytest

import conveyor

_PACKAGE = Path(conveyor.__file__).parent

#: What each layer may not import: `db` owns the event log, `events` is the runtime above it.
_FORBIDDEN = {
    "domain": ("conveyor.db", "conveyor.events", "conveyor.runner", "conveyor.graphql"),
    "db": ("conveyor.events", "conveyor.runner", "conveyor.graphql"),
    "events": ("conveyor.runner", "conveyor.graphql"),
}


def _imported_modules(path: Path) -> set[str]:
    imported: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            imported.add(node.module)
            imported.update(f"{node.module}.{alias.name}" for alias in node.names)
    return imported


@pytest.mark.parametrize("layer", sorted(_FORBIDDEN))
def test_a_layer_imports_nothing_above_it(layer: str) -> None:
    offending = {
        f"{path.relative_to(_PACKAGE)}: {module}"
        for path in (_PACKAGE / layer).rglob("*.py")
        for module in _imported_modules(path)
        if module.startswith(_FORBIDDEN[layer])
    }
    assert not offending
