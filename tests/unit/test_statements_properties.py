"""Properties of statement splitting: nothing but separators is lost, and the parser agrees with the
hand-written lexer it replaced (tests/unit/old_lexer.py) wherever both answer."""

from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor.domain.checks import (
    CheckLevel,
    blocking_findings,
    check_statement,
    default_review_policy,
)
from conveyor.domain.statements import StatementKind, parse_script
from conveyor.domain.statuses import TaskType
from tests.unit import old_lexer

# Statements as migrations write them, each chosen for what a splitter can get wrong.
STATEMENTS = [
    "CREATE TABLE t (x int, note text DEFAULT ';')",
    'CREATE TABLE "select;" ("x;y" int)',
    "INSERT INTO t VALUES (E'a\\';b'), ('c'';d')",
    "INSERT INTO t VALUES ($$; VACUUM $$), ($tag$ ; COMMIT; $tag$)",
    "SELECT 1 /* inside; */ + 2",
    "SELECT 'x' -- a comment; with a semicolon\n  AS y",
    "CREATE INDEX CONCURRENTLY i ON t (x)",
    "CREATE UNIQUE INDEX i ON t (x)",
    "DROP INDEX CONCURRENTLY IF EXISTS i",
    "REINDEX TABLE CONCURRENTLY t",
    "REINDEX INDEX i",
    "VACUUM (ANALYZE) t",
    "ANALYZE t",
    "ALTER TABLE t ADD COLUMN y int",
    "ALTER TABLE p DETACH PARTITION c CONCURRENTLY",
    "ALTER TYPE mood ADD VALUE 'meh'",
    "CLUSTER",
    "CLUSTER t USING t_pkey",
    "CREATE DATABASE d",
    "ALTER DATABASE d SET TABLESPACE ts",
    "ALTER DATABASE d SET work_mem = '8MB'",
    "REFRESH MATERIALIZED VIEW CONCURRENTLY mv",
    "CREATE FUNCTION one() RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n  SELECT CASE WHEN true THEN 1 "
    "END;\n  SELECT 2;\nEND",
    "CREATE OR REPLACE PROCEDURE p() LANGUAGE sql BEGIN ATOMIC INSERT INTO t VALUES (1); END",
    "CREATE FUNCTION two() RETURNS int AS $$ SELECT 2; $$ LANGUAGE sql",
    "CREATE FUNCTION trg() RETURNS trigger LANGUAGE plpgsql AS $body$\nBEGIN\n  NEW.x := 1;\n"
    "  RETURN NEW;\nEND\n$body$",
    "DO $$ BEGIN PERFORM 1; END $$",
    "SAVEPOINT s",
    "ROLLBACK TO SAVEPOINT s",
    "RELEASE SAVEPOINT s",
    "BEGIN",
    "COMMIT",
    "START TRANSACTION",
    "ROLLBACK",
    "UPDATE t SET x = (SELECT max(x) FROM t) WHERE x IN (1, 2)",
    "SELECT \"commit\", 'begin' FROM t",
]
SEPARATORS = [";", " ;", ";\n", ";\n\n", "; -- after\n", ";/* after; */", ";\n; ;", "\n;"]
LEADING = ["", "\n", "-- leading\n", "/* a /* nested */ one */ ", "  \t"]


@st.composite
def scripts(draw: st.DrawFn) -> str:
    chosen = draw(st.lists(st.sampled_from(STATEMENTS), max_size=6))
    parts = [draw(st.sampled_from(LEADING))]
    for index, statement in enumerate(chosen):
        parts.append(statement)
        last = index == len(chosen) - 1
        parts.append(draw(st.sampled_from(["", *SEPARATORS] if last else SEPARATORS)))
        parts.append(draw(st.sampled_from(LEADING)))
    return "".join(parts)


def separators_only(text: str) -> bool:
    """Whether `text` holds nothing but blanks, comments and semicolons, by the old lexer."""
    return all(
        kind in {"line_comment", "block_comment", "semicolon"}
        for kind, _, _ in old_lexer._lexemes(text)
    )


def assert_lossless(script: str) -> None:
    statements = parse_script(script).statements
    position = 0
    for statement in statements:
        assert position <= statement.start < statement.end <= len(script)
        assert script[statement.start : statement.end] == statement.text
        assert statement.text == statement.text.strip()
        assert separators_only(script[position : statement.start]), (script, statement)
        position = statement.end
    assert separators_only(script[position:])


@given(scripts())
@settings(max_examples=400)
def test_splitting_then_joining_loses_nothing_but_separators(script: str) -> None:
    assert_lossless(script)


@given(st.text(alphabet=st.sampled_from("ab1 ;\n'\"$-/*()éE\\\x00\ud800"), max_size=60))
@settings(max_examples=400)
def test_any_text_loses_nothing_but_separators_even_when_it_is_not_sql(script: str) -> None:
    assert_lossless(script)


@given(scripts())
@settings(max_examples=400)
def test_the_parser_agrees_with_the_old_lexer(script: str) -> None:
    new = parse_script(script)
    old = old_lexer.parse_script(script)

    assert all(statement.kind is not StatementKind.UNKNOWN for statement in new.statements)
    assert [statement.text for statement in new.statements] == [
        statement.text for statement in old.statements
    ]
    assert [statement.transactional for statement in new.statements] == [
        statement.transactional for statement in old.statements
    ]
    assert [statement.controls_transaction for statement in new.statements] == [
        statement.controls_transaction for statement in old.statements
    ]
    old_rule = None if old.refusal is None else old.refusal.rule.value
    new_rule = None if new.refusal is None else new.refusal.rule.value
    assert new_rule == old_rule


def offset_of(script: str, line: int, column: int) -> int:
    return sum(len(text) + 1 for text in script.split("\n")[: line - 1]) + column - 1


@given(scripts(), st.sampled_from([TaskType.SCHEMA_UPDATE, TaskType.DATA_UPDATE]), st.booleans())
@settings(max_examples=200)
def test_every_finding_points_into_the_statement_it_names(
    script: str, task_type: TaskType, protected: bool
) -> None:
    policy = default_review_policy(protected)
    statements = parse_script(script).statements

    findings = check_statement(script, task_type, policy)

    assert [(f.line, f.column) for f in findings] == sorted((f.line, f.column) for f in findings)
    for finding in findings:
        assert finding.line is not None
        assert finding.column is not None
        if finding.statement is None:  # about the whole script: it holds no SQL
            assert statements == ()
            continue
        offset = offset_of(script, finding.line, finding.column)
        [named] = [s for s in statements if s.start <= offset <= s.end]
        assert named.text == finding.statement
    blocking = blocking_findings(findings, policy)
    assert all(finding.level is CheckLevel.ERROR for finding in blocking)
    assert set(blocking) == {f for f in findings if f.level is CheckLevel.ERROR}
