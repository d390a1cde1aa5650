"""`conveyor check FILE.sql`: the checks a task would get, from a real process, offline."""

import subprocess
import sys
from pathlib import Path

import pytest

from conveyor import cli
from tests.conftest import run_conveyor

MIGRATION = """\
CREATE TABLE orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, note text);

-- the old column goes
ALTER TABLE orders DROP COLUMN note;
UPDATE orders SET id = id;
"""


@pytest.fixture
def migration(tmp_path: Path) -> Path:
    path = tmp_path / "0042_orders.sql"
    path.write_text(MIGRATION)
    return path


def offline(tmp_path: Path) -> dict[str, str]:
    """An environment where Conveyor has no database: one would be made in this directory."""
    return {"CONVEYOR_DATA_DIR": str(tmp_path / "no-data")}


def test_in_prod_data_loss_blocks_and_each_finding_is_printed_as_a_task_gets_it(
    migration: Path, tmp_path: Path
) -> None:
    done = run_conveyor(["check", str(migration), "--environment", "prod"], offline(tmp_path))

    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert (
        f"{migration}:4:20: ERROR ban-drop-column: Dropping a column may break existing "
        in (lines[0])
    )
    assert lines[1] == "    https://squawkhq.com/docs/ban-drop-column"
    assert f"{migration}:5:1: WARNING dml-in-schema-update: " in lines[2]
    assert lines[4] == (
        f"{migration}:5:1: ERROR update-without-where: UPDATE without WHERE changes every row of "
        "orders"
    )
    assert lines[5] == "    README.md#update-without-where"
    assert lines[-1] == (
        "3 finding(s) for a SCHEMA_UPDATE task in prod (protected): blocked: 2 finding(s) at "
        "ERROR or worse"
    )
    assert not (tmp_path / "no-data").exists()  # offline: no database made or reached


def test_in_dev_the_same_file_passes_with_warnings(migration: Path, tmp_path: Path) -> None:
    done = run_conveyor(["check", str(migration), "--environment", "dev"], offline(tmp_path))

    assert done.returncode == 0, done.stderr
    assert f"{migration}:4:20: WARNING ban-drop-column: " in done.stdout
    assert done.stdout.splitlines()[-1] == (
        "3 finding(s) for a SCHEMA_UPDATE task in dev (not protected): would run"
    )


def test_the_flags_choose_the_task_type_and_whether_the_environment_is_protected(
    migration: Path, tmp_path: Path
) -> None:
    env = offline(tmp_path)

    unprotected = run_conveyor(
        ["check", str(migration), "--environment", "prod", "--not-protected"], env
    )
    protected = run_conveyor(["check", str(migration), "--environment", "qa", "--protected"], env)
    as_data = run_conveyor(
        ["check", str(migration), "--environment", "dev", "--type", "DATA_UPDATE"], env
    )

    assert unprotected.returncode == 0, unprotected.stdout
    assert protected.returncode == 1, protected.stdout
    assert as_data.returncode == 1, as_data.stdout
    assert "ERROR ddl-in-data-update" in as_data.stdout
    assert "dml-in-schema-update" not in as_data.stdout


def test_a_clean_statement_from_stdin_passes_everywhere(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "conveyor", "check", "-", "--environment", "prod"],
        input="CREATE TABLE t (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY);\n",
        capture_output=True,
        text=True,
        timeout=60,
        env={**offline(tmp_path), "PATH": "/usr/bin:/bin"},
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout == "0 finding(s) for a SCHEMA_UPDATE task in prod (protected): would run\n"


def test_a_syntax_error_blocks_with_the_parsers_position(tmp_path: Path) -> None:
    path = tmp_path / "broken.sql"
    path.write_text("SELECT 1;\nSELECT x FORM t;\n")

    done = run_conveyor(["check", str(path), "--environment", "dev"], offline(tmp_path))

    assert done.returncode == 1
    assert done.stdout.splitlines()[0] == (
        f'{path}:2:15: ERROR syntax: syntax error at or near "t"'
    )


def test_a_file_that_cannot_be_read_exits_2(tmp_path: Path) -> None:
    done = run_conveyor(
        ["check", str(tmp_path / "missing.sql"), "--environment", "dev"], offline(tmp_path)
    )

    assert done.returncode == 2
    assert f"conveyor check: cannot read {tmp_path / 'missing.sql'}" in done.stderr
    assert "Traceback" not in done.stderr


def test_without_squawk_the_command_says_so_and_exits_2(
    migration: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))

    with pytest.raises(SystemExit) as exited:
        cli.main(["check", str(migration), "--environment", "prod"])

    assert exited.value.code == 2
    assert "conveyor check: squawk is not installed: `pip install squawk-cli`" in (
        capsys.readouterr().err
    )
