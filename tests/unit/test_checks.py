"""Checks on a task's statement and the review policy weighing them, without a database."""

import json
import re

import pytest

from conveyor.domain.checks import (
    DATA_LOSS_RULES,
    OWN_RULES,
    CheckLevel,
    Finding,
    ReviewPolicy,
    blocking_findings,
    check_statement,
    default_review_policy,
    doc_url,
    is_protected,
    parse_squawk_report,
)
from conveyor.domain.statuses import ApprovalPolicy, TaskType
from tests.unit.test_doc_links import ROOT, anchors

DEV = default_review_policy(protected=False)
PROD = default_review_policy(protected=True)


def rules(sql: str, task_type: TaskType = TaskType.SCHEMA_UPDATE) -> list[str]:
    return [finding.rule for finding in check_statement(sql, task_type, DEV)]


# Each of Conveyor's own rules: what it reports, and a near miss it lets pass.
@pytest.mark.parametrize(
    ("rule", "task_type", "reported", "passed"),
    [
        ("syntax", TaskType.SCHEMA_UPDATE, "CREATE TABLE t (x int", "CREATE TABLE t (x int)"),
        ("syntax", TaskType.DATA_UPDATE, "\\i other.sql", "SELECT '\\i other.sql'"),
        ("statement-cannot-run", TaskType.DATA_UPDATE, "COPY t FROM STDIN", "COPY t FROM '/t.csv'"),
        ("statement-cannot-run", TaskType.DATA_UPDATE, "COPY t TO STDOUT", "SELECT * FROM t"),
        (
            "statement-cannot-run",
            TaskType.SCHEMA_UPDATE,
            "CREATE TABLE t (x int); COMMIT",
            "SAVEPOINT s; CREATE TABLE t (x int); RELEASE SAVEPOINT s",
        ),
        ("ddl-in-data-update", TaskType.DATA_UPDATE, "ALTER TABLE t ADD y int", "SELECT 1"),
        ("ddl-in-data-update", TaskType.DATA_UPDATE, "GRANT SELECT ON t TO r", "SET x.y = 1"),
        (
            "dml-in-schema-update",
            TaskType.SCHEMA_UPDATE,
            "INSERT INTO t VALUES (1)",
            "CREATE VIEW v AS SELECT * FROM t",
        ),
        (
            "dml-in-schema-update",
            TaskType.SCHEMA_UPDATE,
            "WITH d AS (DELETE FROM t WHERE x = 1 RETURNING x) SELECT * FROM d",
            "WITH d AS (SELECT x FROM t) SELECT * FROM d",
        ),
        (
            "update-without-where",
            TaskType.DATA_UPDATE,
            "UPDATE t SET x = 1",
            "UPDATE t SET x = 1 WHERE id = 2",
        ),
        (
            "update-without-where",
            TaskType.DATA_UPDATE,
            "WITH u AS (UPDATE t SET x = 1 RETURNING x) SELECT 1",
            "WITH u AS (UPDATE t SET x = 1 WHERE x = 0 RETURNING x) SELECT 1",
        ),
        ("delete-without-where", TaskType.DATA_UPDATE, "DELETE FROM t", "DELETE FROM t WHERE x"),
        ("truncate", TaskType.DATA_UPDATE, "TRUNCATE t, u CASCADE", "DELETE FROM t WHERE x"),
        ("drop-database", TaskType.SCHEMA_UPDATE, "DROP DATABASE IF EXISTS d", "DROP TABLE d"),
        (
            "grant-to-public",
            TaskType.SCHEMA_UPDATE,
            "GRANT SELECT ON t TO reader, PUBLIC",
            "GRANT SELECT ON t TO reader",
        ),
        (
            "grant-to-public",
            TaskType.SCHEMA_UPDATE,
            "ALTER DEFAULT PRIVILEGES GRANT EXECUTE ON FUNCTIONS TO PUBLIC",
            "REVOKE SELECT ON t FROM PUBLIC",
        ),
    ],
)
def test_each_own_rule_reports_what_it_is_about_and_lets_the_near_miss_pass(
    rule: str, task_type: TaskType, reported: str, passed: str
) -> None:
    assert rule in OWN_RULES
    assert rule in rules(reported, task_type)
    assert rule not in rules(passed, task_type)


@pytest.mark.parametrize("sql", ["", "-- only a comment\n/* and another */ ;"])
def test_a_statement_without_sql_cannot_run(sql: str) -> None:
    [finding] = check_statement(sql, TaskType.SCHEMA_UPDATE, DEV)

    assert (finding.rule, finding.level, finding.statement) == (
        "statement-cannot-run",
        CheckLevel.ERROR,
        None,
    )
    assert finding.message == "the statement holds no SQL, only comments"
    assert rules("SELECT 1") == []


def test_a_rule_is_told_apart_by_task_type() -> None:
    assert "ddl-in-data-update" in rules("CREATE TABLE t (x int)", TaskType.DATA_UPDATE)
    assert "ddl-in-data-update" not in rules("CREATE TABLE t (x int)", TaskType.SCHEMA_UPDATE)
    assert "dml-in-schema-update" in rules("INSERT INTO t VALUES (1)", TaskType.SCHEMA_UPDATE)
    assert "dml-in-schema-update" not in rules("INSERT INTO t VALUES (1)", TaskType.DATA_UPDATE)


def test_a_finding_says_where_in_the_whole_statement_and_links_its_rule() -> None:
    sql = "CREATE TABLE t (x int);\n\n  -- then\n  UPDATE t SET x = 1;\nSELECT x FORM t"

    findings = check_statement(sql, TaskType.DATA_UPDATE, PROD)

    assert [(f.rule, f.level, f.line, f.column, f.statement) for f in findings] == [
        ("ddl-in-data-update", CheckLevel.ERROR, 1, 1, "CREATE TABLE t (x int)"),
        ("update-without-where", CheckLevel.ERROR, 4, 3, "UPDATE t SET x = 1"),
        ("syntax", CheckLevel.ERROR, 5, 15, "SELECT x FORM t"),
    ]
    assert findings[1].message == "UPDATE without WHERE changes every row of t"
    assert findings[2].message == 'syntax error at or near "t"'
    assert [f.doc_url for f in findings] == [
        "README.md#ddl-in-data-update",
        "README.md#update-without-where",
        "README.md#syntax",
    ]


def test_every_own_rule_is_documented_under_a_readme_heading_of_its_name() -> None:
    headings = anchors(ROOT / "README.md")

    assert [
        rule for rule in OWN_RULES if doc_url(rule).removeprefix("README.md#") not in headings
    ] == []


def test_squawk_rules_link_to_squawks_documentation() -> None:
    assert doc_url("ban-drop-column") == "https://squawkhq.com/docs/ban-drop-column"


@pytest.mark.parametrize("rule", DATA_LOSS_RULES)
def test_data_loss_rules_are_errors_where_protected_and_warnings_elsewhere(rule: str) -> None:
    assert PROD.levels[rule] is CheckLevel.ERROR
    assert DEV.levels[rule] is CheckLevel.WARNING


def test_errors_block_in_every_environment_and_nothing_less_does() -> None:
    assert PROD.blocking is DEV.blocking is CheckLevel.ERROR
    findings = check_statement("DELETE FROM t; SELECT x FORM t", TaskType.DATA_UPDATE, DEV)

    assert [f.rule for f in blocking_findings(findings, DEV)] == ["syntax"]
    assert [
        f.rule
        for f in blocking_findings(
            check_statement("DELETE FROM t; SELECT x FORM t", TaskType.DATA_UPDATE, PROD), PROD
        )
    ] == ["delete-without-where", "syntax"]


def test_the_timeout_rules_are_off_because_the_runner_sets_timeouts_itself() -> None:
    squawk = [
        finding("require-timeout-settings"),
        finding("require-lock-timeout"),
        finding("require-statement-timeout"),
        finding("ban-drop-column"),
    ]

    for policy in (DEV, PROD):
        kept = check_statement(
            "ALTER TABLE t DROP COLUMN c", TaskType.SCHEMA_UPDATE, policy, squawk
        )
        assert [f.rule for f in kept] == ["ban-drop-column"]


def finding(rule: str, level: CheckLevel = CheckLevel.WARNING) -> Finding:
    return Finding(rule, level, "a message", "ALTER TABLE t DROP COLUMN c", 1, 15, doc_url(rule))


def test_a_policy_sets_each_rules_level_turns_rules_off_and_says_what_blocks() -> None:
    strict = ReviewPolicy(
        {"prefer-robust-stmts": CheckLevel.ERROR, "truncate": None},
        blocking=CheckLevel.WARNING,
    )
    linted = [finding("prefer-robust-stmts", CheckLevel.NOTICE), finding("some-new-rule")]

    findings = check_statement(
        "TRUNCATE t; UPDATE t SET x = 1", TaskType.DATA_UPDATE, strict, linted
    )

    assert [(f.rule, f.level) for f in findings] == [
        ("update-without-where", CheckLevel.WARNING),
        ("prefer-robust-stmts", CheckLevel.ERROR),
        ("some-new-rule", CheckLevel.WARNING),  # a rule the policy does not name keeps its level
    ]
    assert [f.rule for f in blocking_findings(findings, strict)] == [
        "update-without-where",
        "prefer-robust-stmts",
        "some-new-rule",
    ]
    assert blocking_findings(findings, ReviewPolicy({}, blocking=CheckLevel.ERROR)) == (
        findings[1],
    )


def test_a_clean_statement_has_no_findings() -> None:
    sql = "CREATE TABLE orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY);"
    assert check_statement(sql, TaskType.SCHEMA_UPDATE, PROD) == ()
    assert check_statement("UPDATE t SET x = 1 WHERE id = 7", TaskType.DATA_UPDATE, PROD) == ()


def test_protected_environments_are_those_whose_tasks_wait_for_approval() -> None:
    assert is_protected(ApprovalPolicy.MANUAL)
    assert not is_protected(ApprovalPolicy.AUTOMATIC)


def test_squawks_report_is_read_with_lines_from_one_and_columns_in_characters() -> None:
    sql = "SELECT 'é';\nALTER TABLE \"tablé\" DROP COLUMN ü;\nCREATE INDEX i ON t (x);"
    # As squawk 2.70 prints it: lines from 0, columns in bytes.
    report = [
        {
            "file": "stdin",
            "line": 1,
            "column": 21,
            "level": "Warning",
            "message": "Dropping a column may break existing clients.",
            "help": None,
            "rule_name": "ban-drop-column",
            "column_end": 36,
            "line_end": 1,
        },
        {
            "file": "stdin",
            "line": 2,
            "column": 0,
            "level": "Error",
            "message": "During normal index creation, table updates are blocked.",
            "help": "Use `concurrently` to avoid blocking writes.",
            "rule_name": "require-concurrent-index-creation",
            "column_end": 24,
            "line_end": 2,
        },
    ]

    findings = parse_squawk_report(json.dumps(report), sql)

    assert findings == (
        Finding(
            "ban-drop-column",
            CheckLevel.WARNING,
            "Dropping a column may break existing clients.",
            'ALTER TABLE "tablé" DROP COLUMN ü',
            2,
            21,
            "https://squawkhq.com/docs/ban-drop-column",
        ),
        Finding(
            "require-concurrent-index-creation",
            CheckLevel.ERROR,
            "During normal index creation, table updates are blocked. "
            "Use `concurrently` to avoid blocking writes.",
            "CREATE INDEX i ON t (x)",
            3,
            1,
            "https://squawkhq.com/docs/require-concurrent-index-creation",
        ),
    )
    assert parse_squawk_report("[]", sql) == ()


def readme_defaults() -> dict[str, tuple[str, str]]:
    """The README's table of rules: rule -> (level where protected, level elsewhere)."""
    text = (ROOT / "README.md").read_text()
    table = text[text.index("### Rules and their defaults") :].split("\n\n")[2]
    defaults = {}
    for row in table.splitlines()[2:]:
        rules_cell, protected, other, _ = (cell.strip() for cell in row.strip("|").split("|"))
        for rule in re.findall(r"`([a-z-]+)`", rules_cell):
            defaults[rule] = (protected, other)
    return defaults


def test_the_readme_states_the_default_policies_as_they_are() -> None:
    def said(level: CheckLevel | None) -> str:
        return "off" if level is None else level.value

    stated = readme_defaults()

    assert set(stated) == set(PROD.levels) == set(DEV.levels)
    assert stated == {rule: (said(PROD.levels[rule]), said(DEV.levels[rule])) for rule in stated}
