"""What a runnable statement is: splitting, classifying and refusing scripts, without a database."""

import pytest

from conveyor.domain.statements import StatementRule, is_transactional, parse_script, refusal_of


@pytest.mark.parametrize(
    ("statement", "transactional"),
    [
        ("CREATE INDEX CONCURRENTLY i ON t (x)", False),
        ("create unique index concurrently i on t (x)", False),
        ("DROP INDEX CONCURRENTLY i", False),
        ("REINDEX TABLE CONCURRENTLY t", False),
        ("REINDEX (VERBOSE) INDEX CONCURRENTLY i", False),
        ("REINDEX DATABASE d", False),
        ("ALTER TABLE p DETACH PARTITION c CONCURRENTLY", False),
        ("VACUUM", False),
        ("vacuum (analyze) t", False),
        ("CREATE DATABASE d", False),
        ("DROP DATABASE IF EXISTS d", False),
        ("ALTER SYSTEM SET work_mem = '8MB'", False),
        ("CREATE TABLESPACE ts LOCATION '/srv/ts'", False),
        ("DROP TABLESPACE ts", False),
        ("ALTER DATABASE d SET TABLESPACE ts", False),
        ("CLUSTER", False),
        ("CREATE TABLE t (x int);\nCREATE INDEX CONCURRENTLY i ON t (x);", False),
        ("/* setup */ SELECT 1; VACUUM t -- trailing", False),
        ("CREATE INDEX i ON t (x) -- CONCURRENTLY", True),
        ("/* VACUUM; CREATE INDEX CONCURRENTLY */ CREATE INDEX i ON t (x)", True),
        ("/* nested /* */ VACUUM */ SELECT 1", True),
        ("INSERT INTO notes VALUES ('VACUUM; CREATE INDEX CONCURRENTLY i ON t (x)')", True),
        ("INSERT INTO notes VALUES ('it''s; VACUUM')", True),
        ("INSERT INTO notes VALUES (E'it\\'s; VACUUM')", True),
        ("SELECT $$; VACUUM $$", True),
        ("SELECT $body$ ; DROP DATABASE d; $body$", True),
        ('CREATE TABLE "vacuum" (x int); SELECT "x;VACUUM" FROM t', True),
        ("REFRESH MATERIALIZED VIEW CONCURRENTLY mv", True),
        ("ALTER TYPE mood ADD VALUE 'meh'", True),
        ("ALTER DATABASE d SET work_mem = '8MB'", True),
        ("CLUSTER t USING t_pkey", True),
        ("REINDEX TABLE t", True),
        ("CREATE TABLE t (x int); INSERT INTO t VALUES (1)", True),
        ("", True),
    ],
)
def test_a_script_is_transactional_unless_a_statement_refuses_a_transaction_block(
    statement: str, transactional: bool
) -> None:
    assert is_transactional(statement) is transactional


def test_a_script_is_split_where_psql_would() -> None:
    script = """
        -- leading comment
        CREATE TABLE t (x text DEFAULT ';');
        CREATE FUNCTION one() RETURNS int LANGUAGE sql
        BEGIN ATOMIC
            SELECT CASE WHEN true THEN 1 END;
        END;
        CREATE FUNCTION two() RETURNS int AS $$ SELECT 2; $$ LANGUAGE sql;
        INSERT INTO t VALUES (E'a\\';b'), ('c'';d') ; ;
        /* trailing; comment */
    """

    assert [statement.text for statement in parse_script(script).statements] == [
        "CREATE TABLE t (x text DEFAULT ';')",
        "CREATE FUNCTION one() RETURNS int LANGUAGE sql\n        BEGIN ATOMIC\n"
        "            SELECT CASE WHEN true THEN 1 END;\n        END",
        "CREATE FUNCTION two() RETURNS int AS $$ SELECT 2; $$ LANGUAGE sql",
        "INSERT INTO t VALUES (E'a\\';b'), ('c'';d')",
    ]


@pytest.mark.parametrize(
    "script",
    ["", "  \n\t", "-- nothing here\n/* still nothing */", "/* a /* nested */ one */ ; ;", ";"],
)
def test_a_script_without_sql_is_refused_as_empty(script: str) -> None:
    refusal = refusal_of(script)

    assert refusal is not None
    assert refusal.rule is StatementRule.EMPTY_STATEMENT


@pytest.mark.parametrize(
    "script",
    [
        "BEGIN; INSERT INTO notes VALUES (1); COMMIT",
        "INSERT INTO notes VALUES (1); ROLLBACK",
        "start transaction; INSERT INTO notes VALUES (1); end",
        "begin",
        "COMMIT AND CHAIN",
        "ABORT",
        "ROLLBACK WORK",
        "PREPARE TRANSACTION 'x'",
        "COMMIT PREPARED 'x'",
        "-- first\nCREATE TABLE t (x int); /* then */ commit",
    ],
)
def test_a_script_that_controls_transactions_is_refused(script: str) -> None:
    refusal = refusal_of(script)

    assert refusal is not None
    assert refusal.rule is StatementRule.TRANSACTION_CONTROL
    assert "BEGIN, COMMIT, ROLLBACK" in refusal.message


@pytest.mark.parametrize(
    "script",
    [
        "SELECT 1",
        "SAVEPOINT s; INSERT INTO notes VALUES (1); ROLLBACK TO SAVEPOINT s",
        "RELEASE SAVEPOINT s",
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END",
        "DO $$ BEGIN PERFORM 1; END $$",
        "INSERT INTO notes VALUES ('BEGIN; COMMIT')",
        'SELECT 1 AS "commit"',
        "-- COMMIT\nSELECT 1 /* ROLLBACK */",
        "CREATE INDEX CONCURRENTLY i ON t (x)",
    ],
)
def test_a_script_of_sql_that_leaves_transactions_alone_may_run(script: str) -> None:
    assert refusal_of(script) is None
