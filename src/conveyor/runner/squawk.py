"""Running squawk, the PostgreSQL migration linter, over a task's statement.

The binary comes with the `squawk-cli` wheel, in the same bin directory as the Python running
Conveyor; its JSON report is read by `domain.checks.parse_squawk_report`.
"""

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

from conveyor.domain.checks import Finding, parse_squawk_report
from conveyor.domain.statements import is_transactional

#: A linter slower than this is stuck: the statement is at most a few megabytes.
LINT_TIMEOUT_SECONDS = 60.0


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


def _command(sql: str) -> list[str]:
    command = [str(squawk_binary()), "--reporter", "json", "--stdin-filepath", "statement.sql"]
    # Conveyor wraps a transactional change in a transaction of its own: squawk then judges
    # CONCURRENTLY and robustness as they will run. A script that cannot run in one runs bare.
    if is_transactional(sql):
        command.append("--assume-in-transaction")
    return command


def _report(sql: str, returncode: int | None, stdout: bytes, stderr: bytes) -> tuple[Finding, ...]:
    # squawk exits 1 when it found something, and also when it failed: only its output tells.
    text = stdout.decode(errors="replace").strip()
    if not text.startswith("["):
        reason = stderr.decode(errors="replace").strip() or text or f"exit status {returncode}"
        raise SquawkUnavailable(f"squawk gave no report: {reason}")
    return parse_squawk_report(text, sql)


def lint_sync(sql: str) -> tuple[Finding, ...]:
    """squawk's findings on `sql`, at squawk's own levels (a ReviewPolicy weighs them)."""
    try:
        done = subprocess.run(
            _command(sql),
            input=sql.encode(),
            capture_output=True,
            timeout=LINT_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise SquawkUnavailable(f"squawk took more than {error.timeout:g} s") from None
    except OSError as error:
        raise SquawkUnavailable(f"squawk could not start: {error}") from None
    return _report(sql, done.returncode, done.stdout, done.stderr)


async def lint(sql: str) -> tuple[Finding, ...]:
    """squawk's findings on `sql`, at squawk's own levels (a ReviewPolicy weighs them)."""
    try:
        process = await asyncio.create_subprocess_exec(
            *_command(sql),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as error:
        raise SquawkUnavailable(f"squawk could not start: {error}") from None
    try:
        stdout, stderr = await asyncio.wait_for(
            process.communicate(sql.encode()), LINT_TIMEOUT_SECONDS
        )
    except TimeoutError:
        raise SquawkUnavailable(f"squawk took more than {LINT_TIMEOUT_SECONDS:g} s") from None
    finally:
        if process.returncode is None:  # timed out or canceled: leave no linter behind
            process.kill()
            await process.wait()
    return _report(sql, process.returncode, stdout, stderr)
