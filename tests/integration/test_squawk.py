"""squawk, the real binary from the squawk-cli wheel, run over statements as the checks run it."""

import sys
from pathlib import Path

import pytest

from conveyor.domain.checks import CheckLevel, check_statement, default_review_policy
from conveyor.domain.statuses import TaskType
from conveyor.runner import squawk
from conveyor.runner.squawk import SquawkUnavailable, lint, lint_many, lint_many_sync, lint_sync


# squawk's rules the issue names: what each reports and a safe way to write the same change.
@pytest.mark.parametrize(
    ("rule", "reported", "passed"),
    [
        (
            "require-concurrent-index-creation",
            "CREATE INDEX orders_customer ON orders (customer_id)",
            "CREATE INDEX CONCURRENTLY orders_customer ON orders (customer_id)",
        ),
        (
            "adding-not-nullable-field",
            "ALTER TABLE orders ALTER COLUMN note SET NOT NULL",
            "ALTER TABLE orders ADD CONSTRAINT note_set CHECK (note IS NOT NULL) NOT VALID",
        ),
        (
            "ban-drop-column",
            "ALTER TABLE orders DROP COLUMN note",
            "ALTER TABLE orders ADD COLUMN note2 text",
        ),
        (
            "changing-column-type",
            "ALTER TABLE orders ALTER COLUMN note TYPE varchar(10)",
            "ALTER TABLE orders ALTER COLUMN note SET DEFAULT ''",
        ),
        (
            "constraint-missing-not-valid",
            "ALTER TABLE orders ADD CONSTRAINT positive CHECK (total > 0)",
            "ALTER TABLE orders ADD CONSTRAINT positive CHECK (total > 0) NOT VALID",
        ),
        (
            "ban-drop-table",
            "DROP TABLE orders",
            "CREATE TABLE orders_archive (id bigint)",
        ),
    ],
)
def test_squawk_reports_its_rule_and_lets_the_safe_form_pass(
    rule: str, reported: str, passed: str
) -> None:
    assert rule in [finding.rule for finding in lint_sync(reported)]
    assert rule not in [finding.rule for finding in lint_sync(passed)]


def test_findings_point_at_their_statement_in_the_whole_script() -> None:
    sql = "CREATE TABLE t (id bigint);\n\n-- and then\nALTER TABLE t DROP COLUMN note;\n"

    [finding] = [f for f in lint_sync(sql) if f.rule == "ban-drop-column"]

    assert (finding.line, finding.column) == (4, 15)
    assert finding.statement == "ALTER TABLE t DROP COLUMN note"
    assert finding.doc_url == "https://squawkhq.com/docs/ban-drop-column"


def test_a_transactional_script_is_judged_as_conveyor_runs_it_in_a_transaction() -> None:
    # Inside the change's transaction a failed statement leaves nothing behind: squawk does not
    # ask for IF NOT EXISTS there, but does where statements commit one by one.
    in_transaction = "CREATE TABLE t (id bigint); CREATE TABLE u (id bigint)"
    outside = "CREATE TABLE t (id bigint); CREATE INDEX CONCURRENTLY u_id ON u (id)"

    assert "prefer-robust-stmts" not in [f.rule for f in lint_sync(in_transaction)]
    rules_outside = [f.rule for f in lint_sync(outside)]
    assert "prefer-robust-stmts" in rules_outside
    assert "ban-concurrent-index-creation-in-transaction" not in rules_outside


def test_under_the_default_policies_only_data_loss_blocks_and_only_where_protected() -> None:
    sql = (
        "ALTER TABLE orders ADD COLUMN total int;\n"
        "CREATE INDEX orders_total ON orders (total);\n"
        "ALTER TABLE orders DROP COLUMN note;\n"
    )
    linted = lint_sync(sql)

    def levels(protected: bool) -> dict[str, CheckLevel]:
        policy = default_review_policy(protected)
        found = check_statement(sql, TaskType.SCHEMA_UPDATE, policy, linted)
        return {finding.rule: finding.level for finding in found}

    # The timeout rules squawk reports are off: the runner sets the timeouts itself.
    assert {"require-timeout-settings", "require-statement-timeout"} & {f.rule for f in linted}
    assert levels(protected=True) == {
        "prefer-bigint-over-int": CheckLevel.NOTICE,
        "require-concurrent-index-creation": CheckLevel.WARNING,
        "ban-drop-column": CheckLevel.ERROR,
    }
    assert levels(protected=False)["ban-drop-column"] is CheckLevel.WARNING


async def test_the_async_lint_gives_what_the_sync_one_gives() -> None:
    sql = "CREATE INDEX i ON t (x); ALTER TABLE t DROP COLUMN y; SELECT 'é'"

    assert await lint(sql) == lint_sync(sql)
    assert await lint("SELECT 1") == ()


async def test_many_statements_linted_in_one_run_get_what_each_gets_alone() -> None:
    statements = [
        "CREATE INDEX i ON t (x)",
        "SELECT 1",
        "CREATE TABLE t (id bigint); CREATE INDEX CONCURRENTLY u_id ON u (id)",
        "ALTER TABLE t DROP COLUMN y;\nALTER TABLE t ADD COLUMN z int",
        "CREATE TABLE t (id bigint); CREATE TABLE u (id bigint)",
        "ALTER TABLE t DROP COLUMN \ud800",  # PostgreSQL cannot read it: not linted
        "ALTER TABLE t DROP COLUMN y; \x00",
    ]

    together = lint_many_sync(statements)

    assert together == [lint_sync(statement) for statement in statements]
    assert together[1] == () == together[5] == together[6]
    assert [finding.line for finding in together[3] if finding.rule == "ban-drop-column"] == [1]
    assert await lint_many(statements) == together
    assert lint_many_sync([]) == []


def test_a_missing_binary_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))

    with pytest.raises(
        SquawkUnavailable, match="squawk is not installed: `pip install squawk-cli`"
    ):
        lint_sync("SELECT 1")


async def test_a_binary_that_gives_no_report_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    impostor = tmp_path / "squawk"
    impostor.write_text("#!/bin/sh\necho 'something broke' >&2\nexit 3\n")
    impostor.chmod(0o755)
    monkeypatch.setattr(squawk, "squawk_binary", lambda: impostor)

    with pytest.raises(SquawkUnavailable, match="squawk gave no report: something broke"):
        lint_sync("SELECT 1")
    with pytest.raises(SquawkUnavailable, match="squawk gave no report: something broke"):
        await lint("SELECT 1")


def test_squawk_reports_every_rule_but_its_syntax_error_as_a_warning() -> None:
    # What domain.check_review.linter_could_block relies on (SQUAWK_OWN_LEVELS): were squawk to
    # report another rule as an error, a task it could block would start without waiting for it.
    history = sorted((Path(__file__).parent / "migration_history").glob("*.sql"))
    risky = [
        "ALTER TABLE t DROP COLUMN c",
        "DROP TABLE x",
        "DROP SCHEMA s",
        "DROP DATABASE d",
        "TRUNCATE t CASCADE",
        "CREATE INDEX i ON t (a)",
        "DROP INDEX i",
        "ALTER TABLE t ADD COLUMN c int NOT NULL",
        "ALTER TABLE t ALTER COLUMN a TYPE bigint",
        "ALTER TABLE t ALTER COLUMN a SET NOT NULL",
        "ALTER TABLE t ADD CONSTRAINT f FOREIGN KEY (a) REFERENCES u (id)",
        "ALTER TABLE t ADD CONSTRAINT u UNIQUE (a)",
        "ALTER TABLE t RENAME COLUMN a TO b",
        "ALTER TABLE t RENAME TO u",
        "CREATE TABLE q (id serial PRIMARY KEY, c char(3), t timestamp, n int, s smallint)",
        "CREATE DOMAIN d AS int CHECK (VALUE > 0)",
        "BEGIN",
        "UPDATE t SET a = 1",
        "DELETE FROM t",
    ]
    scripts = [path.read_text() for path in history] + risky
    findings = [finding for found in lint_many_sync(scripts) for finding in found]

    assert len({finding.rule for finding in findings}) >= 15
    assert {finding.rule for finding in findings if finding.level is not CheckLevel.WARNING} <= {
        "syntax-error"
    }
