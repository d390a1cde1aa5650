"""graphql/ imports no rule from db/: rules live in domain/, db/ only reads and writes.

What counts: from `conveyor.db`, the GraphQL layer may use modules, classes and type aliases
(the models and the records queries return, such as `Page`), coroutine functions (queries and
writes, which do IO) and functions that build a query without running it (they return a
`QuerySet`). Any other plain function or constant of `db` is taken for a rule, or a value a rule
owns (a length limit), which must come from `domain`, unless it is named below with the reason
it is not one.
"""

import ast
import importlib
import inspect
import types
import typing
from pathlib import Path
from types import ModuleType

import conveyor

GRAPHQL = Path(conveyor.__file__).parent / "graphql"

_COMPILED = "conveyor.db.compiled_reads"
#: Plain functions and constants of `db` that are not rules, and why.
NOT_RULES = {
    # Knowledge of the database driver's exceptions (is this an outage?).
    "conveyor.db.outages.database_unavailable",
    # Collects the sequence numbers the event writes of a request reached (a context manager).
    "conveyor.db.events.noting_sequences",
    # The compiled read's SQL and the names of the hidden keys in the JSON it returns.
    f"{_COMPILED}.statement",
    f"{_COMPILED}.relation_target",
    # Names the source of a live batch's arguments (its events' sequence numbers).
    f"{_COMPILED}.EVENT_BATCH",
    *(
        f"{_COMPILED}.{key}"
        for key in ("ACCESS_KEY", "ACTIVE_STAGE_KEY", "ROW_ID_KEY", "SCHEDULING_KEY")
    ),
    *(f"{_COMPILED}.{key}" for key in ("STATUSES_KEY", "TYPE_KEY")),
    # Decoders of the facts that SQL read, handed to domain.task_actions.actions_for and
    # domain.scheduling.decide: no decision of their own.
    f"{_COMPILED}.available_actions",
    f"{_COMPILED}.scheduling_decision",
}


def _is_query_or_record(module: ModuleType, name: str) -> bool:
    value = getattr(module, name)
    if f"{module.__name__}.{name}" in NOT_RULES:
        return True
    return (
        inspect.ismodule(value)
        or inspect.isclass(value)
        or isinstance(
            value,
            types.UnionType | types.GenericAlias | typing._GenericAlias,  # type: ignore[attr-defined]
        )
        or inspect.iscoroutinefunction(value)
        or inspect.isasyncgenfunction(value)
        or (callable(value) and "QuerySet" in str(inspect.signature(value).return_annotation))
    )


def _db_names_used(tree: ast.Module) -> list[tuple[ModuleType, str]]:
    used: list[tuple[ModuleType, str]] = []
    module_aliases: dict[str, ModuleType] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("conveyor.db"):
            module = importlib.import_module(node.module or "")
            for alias in node.names:
                submodule = f"{module.__name__}.{alias.name}"
                value = (
                    getattr(module, alias.name)
                    if hasattr(module, alias.name)
                    else importlib.import_module(submodule)
                )
                if inspect.ismodule(value):
                    module_aliases[alias.asname or alias.name] = value
                else:
                    used.append((module, alias.name))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in module_aliases
        ):
            used.append((module_aliases[node.value.id], node.attr))
    return used


def test_graphql_imports_no_rule_from_db() -> None:
    rules = sorted(
        f"{path.relative_to(GRAPHQL)}: {module.__name__}.{name}"
        for path in GRAPHQL.rglob("*.py")
        for module, name in _db_names_used(ast.parse(path.read_text()))
        if not _is_query_or_record(module, name)
    )
    assert rules == []


def test_the_check_sees_a_rule_imported_from_db() -> None:
    tree = ast.parse("from conveyor.db.task_status import now_utc\n")
    [(module, name)] = _db_names_used(tree)
    assert not _is_query_or_record(module, name)
