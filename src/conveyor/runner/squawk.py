"""Running squawk, the PostgreSQL migration linter, over task statements.

The binary comes with the `squawk-cli` wheel, in the same bin directory as the Python running
Conveyor; its JSON report is read by `domain.checks`. Starting squawk costs more than linting a
statement, so many statements are linted by one run, each in a file of its own.
"""

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from conveyor.domain.checks import Finding, squawk_findings
from conveyor.domain.statements import is_readable, is_transactional

#: A linter slower than this is stuck: a batch is at most _BATCH statements.
LINT_TIMEOUT_SECONDS = 120.0
_BATCH = 1_000


class SquawkUnavailable(Exception):
    """squawk cannot be found or did not give a report; the message says what to do."""


def squawk_binary() -> Path:
    """The squawk binary beside the running Python (a virtualenv's bin), else on PATH."""
    beside = Path(sys.executable).parent / "squawk"
    if beside.is_file():
        return beside
    found = shutil.which("squawk")
    if found is None:
        raise SquawkUnavailable(
            "squawk is not installed: `pip install squawk-cli` puts it beside Python "
            f"({beside.parent}) or install it on the PATH"
        )
    return Path(found)


def _run(binary: Path, directory: Path, names: list[str], in_transaction: bool) -> list[Any]:
    command = [str(binary), "--reporter", "json"]
    # Conveyor wraps a transactional change in a transaction of its own: squawk then judges
    # CONCURRENTLY and robustness as they will run. A script that cannot run in one runs bare.
    if in_transaction:
        command.append("--assume-in-transaction")
    try:
        # Run in the batch's own directory: a .squawk.toml of wherever Conveyor was started
        # must not change what a task is told.
        done = subprocess.run(
            [*command, *names],
            cwd=directory,
            capture_output=True,
            timeout=LINT_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise SquawkUnavailable(f"squawk took more than {error.timeout:g} s") from None
    except OSError as error:
        raise SquawkUnavailable(f"squawk could not start: {error}") from None
    # squawk exits 1 when it found something, and also when it failed: only its output tells.
    text = done.stdout.decode(errors="replace").strip()
    if not text.startswith("["):
        reason = done.stderr.decode(errors="replace").strip() or text
        raise SquawkUnavailable(f"squawk gave no report: {reason or done.returncode}")
    entries: list[Any] = json.loads(text)
    return entries


# Files made in memory: on a disk, making a file can cost more than squawk's lint of it (1.6 ms a
# file on this project's machine, 0.02 ms in /dev/shm). A container's /dev/shm may be small
# (64 MB by default in Docker): a batch larger than this goes to the temporary directory.
_IN_MEMORY = Path("/dev/shm")
_IN_MEMORY_MAX_CHARACTERS = 8_000_000


def _scratch_directory(characters: int) -> Path | None:
    """Where a batch of this size is written: memory when it fits, else the default."""
    writable = _IN_MEMORY.is_dir() and os.access(_IN_MEMORY, os.W_OK | os.X_OK)
    if characters <= _IN_MEMORY_MAX_CHARACTERS and writable:
        return _IN_MEMORY
    return None


def lint_many_sync(statements: Sequence[str]) -> list[tuple[Finding, ...]]:
    """squawk's findings on each of `statements`, at squawk's own levels (a ReviewPolicy
    weighs them), in the same order."""
    binary = squawk_binary()
    found: dict[int, list[Any]] = defaultdict(list)
    scratch = _scratch_directory(sum(len(statement) for statement in statements))
    with tempfile.TemporaryDirectory(prefix="conveyor-squawk-", dir=scratch) as name:
        directory = Path(name)
        by_transaction: dict[bool, list[str]] = defaultdict(list)
        for index, statement in enumerate(statements):
            # What PostgreSQL cannot read has its syntax finding; squawk would choke on it.
            if is_readable(statement):
                (directory / f"{index}.sql").write_text(statement)
                by_transaction[is_transactional(statement)].append(f"{index}.sql")
        for in_transaction, names in by_transaction.items():
            for start in range(0, len(names), _BATCH):
                batch = names[start : start + _BATCH]
                for entry in _run(binary, directory, batch, in_transaction):
                    found[int(Path(entry["file"]).stem)].append(entry)
    return [squawk_findings(found[index], statement) for index, statement in enumerate(statements)]


def lint_sync(statement: str) -> tuple[Finding, ...]:
    """squawk's findings on `statement`, at squawk's own levels."""
    return lint_many_sync([statement])[0]


async def lint_many(statements: Sequence[str]) -> list[tuple[Finding, ...]]:
    """`lint_many_sync` off the event loop."""
    return await asyncio.to_thread(lint_many_sync, statements)


async def lint(statement: str) -> tuple[Finding, ...]:
    """squawk's findings on `statement`, at squawk's own levels, off the event loop."""
    return (await lint_many([statement]))[0]
