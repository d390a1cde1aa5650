"""What a runnable statement is: splitting, classifying and refusing scripts, without a database."""

import pytest

from conveyor.domain import statements
from conveyor.domain.statements import (
    Relation,
    StatementKind,
    StatementRule,
    is_transactional,
    line_and_column,
    parse_script,
    refusal_of,
)


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


@pytest.mark.parametrize(
    ("script", "kinds"),
    [
        ("CREATE TABLE t (x int)", [StatementKind.DDL]),
        ("ALTER TABLE t ADD COLUMN y int; DROP INDEX i", [StatementKind.DDL] * 2),
        ("GRANT SELECT ON t TO reader", [StatementKind.DDL]),
        ("SELECT x INTO copy FROM t", [StatementKind.DDL]),
        ("INSERT INTO t VALUES (1); UPDATE t SET x = 2", [StatementKind.DML] * 2),
        (
            "DELETE FROM t WHERE x = 1; MERGE INTO t USING s ON t.x = s.x WHEN MATCHED THEN DELETE",
            [StatementKind.DML] * 2,
        ),
        ("TRUNCATE t; COPY t FROM '/tmp/t.csv'", [StatementKind.DML] * 2),
        ("WITH gone AS (DELETE FROM t RETURNING x) SELECT count(*) FROM gone", [StatementKind.DML]),
        ("SELECT 1; SHOW work_mem; EXPLAIN SELECT 1", [StatementKind.QUERY] * 3),
        ("SET lock_timeout = '1s'; DO $$ BEGIN END $$; VACUUM t", [StatementKind.UTILITY] * 3),
        ("SAVEPOINT s; ROLLBACK TO SAVEPOINT s", [StatementKind.UTILITY] * 2),
        ("BEGIN; COMMIT", [StatementKind.TRANSACTION_CONTROL] * 2),
        (
            "SELECT 1; SELEC 2; CREATE TABLE t ()",
            [StatementKind.QUERY, StatementKind.UNKNOWN, StatementKind.DDL],
        ),
    ],
)
def test_each_statement_is_classified_by_the_parser(
    script: str, kinds: list[StatementKind]
) -> None:
    assert [statement.kind for statement in parse_script(script).statements] == kinds


def test_a_statement_names_the_relations_and_schemas_it_touches() -> None:
    [create, insert, schema] = parse_script(
        "CREATE TABLE sales.orders (id int REFERENCES customers);"
        'INSERT INTO "Audit".log SELECT * FROM sales.orders JOIN items USING (id);'
        "CREATE SCHEMA reports"
    ).statements

    assert create.relations == (Relation("sales", "orders"), Relation(None, "customers"))
    assert create.schemas == ("sales",)
    assert set(insert.relations) == {
        Relation("Audit", "log"),
        Relation("sales", "orders"),
        Relation(None, "items"),
    }
    assert set(insert.schemas) == {"Audit", "sales"}
    assert schema.schemas == ("reports",)


def test_a_syntax_error_is_found_in_its_statement_at_the_parsers_position() -> None:
    script = "CREATE TABLE t (x int);\n-- the next one is wrong\nSELECT x FORM t;\nSELECT 2"

    statements = parse_script(script).statements

    assert [statement.text for statement in statements] == [
        "CREATE TABLE t (x int)",
        "SELECT x FORM t",
        "SELECT 2",
    ]
    problem = statements[1].syntax_error
    assert problem is not None
    assert problem.message == 'syntax error at or near "t"'
    assert line_and_column(script, problem.offset) == (3, 15)
    assert statements[0].syntax_error is None
    assert statements[2].syntax_error is None


@pytest.mark.parametrize(
    ("script", "texts", "error_at"),
    [
        (
            "SELECT 1; SELECT 'unterminated; SELECT 3",
            ["SELECT 1", "SELECT 'unterminated; SELECT 3"],
            (1, 18),
        ),
        ("SELECT 1; /* never closed; SELECT 2", ["SELECT 1", "/* never closed; SELECT 2"], (1, 11)),
        ("SELECT $x$ open;\n", ["SELECT $x$ open;"], (1, 8)),
        ('SELECT "open', ['SELECT "open'], (1, 8)),
    ],
)
def test_an_unterminated_quote_or_comment_takes_the_rest_of_the_script(
    script: str, texts: list[str], error_at: tuple[int, int]
) -> None:
    statements = parse_script(script).statements

    assert [statement.text for statement in statements] == texts
    problem = statements[-1].syntax_error
    assert problem is not None
    assert "unterminated" in problem.message
    assert line_and_column(script, problem.offset) == error_at
    assert statements[-1].transactional


def test_positions_count_characters_not_bytes() -> None:
    script = "SELECT 'é€😀';\nSELECT 'ü' FORM t"

    [first, second] = parse_script(script).statements

    assert script[first.start : first.end] == first.text == "SELECT 'é€😀'"
    assert script[second.start : second.end] == second.text
    assert second.syntax_error is not None
    assert line_and_column(script, second.syntax_error.offset) == (2, 17)


@pytest.mark.parametrize(
    ("script", "message", "offset"),
    [
        ("SELECT 1;\x00; DROP TABLE t", "a NUL character, which PostgreSQL refuses", 9),
        ("SELECT '\ud800'; DROP TABLE t", "a lone surrogate, which is not valid UTF-8", 8),
    ],
)
def test_a_script_postgresql_cannot_read_stays_whole_with_its_problem(
    script: str, message: str, offset: int
) -> None:
    [statement] = parse_script(script).statements

    assert statement.text == script
    assert statement.kind is StatementKind.UNKNOWN
    assert statement.syntax_error is not None
    assert message in statement.syntax_error.message
    assert statement.syntax_error.offset == offset
    assert statement.transactional


@pytest.mark.parametrize(
    ("statement", "schemas"),
    [
        ("CREATE FUNCTION app.f() RETURNS int LANGUAGE sql RETURN pg_catalog.abs(1)", ("app",)),
        ("CREATE OR REPLACE PROCEDURE ops.p() LANGUAGE sql BEGIN ATOMIC SELECT 1; END", ("ops",)),
        ("CREATE TYPE app.mood AS ENUM ('sad', 'ok')", ("app",)),
        ("CREATE TYPE app.pair AS (a int, b int)", ("app",)),
        ("CREATE DOMAIN app.email AS other.text", ("app",)),
        ("CREATE AGGREGATE app.total (int) (sfunc = int4pl, stype = int)", ("app",)),
        ("CREATE TABLE x.t (e app.email DEFAULT pg_catalog.now())", ("x",)),
        ("CREATE FUNCTION f() RETURNS int LANGUAGE sql RETURN 1", ()),
    ],
)
def test_the_schema_of_what_a_statement_defines_is_named_not_those_it_only_uses(
    statement: str, schemas: tuple[str, ...]
) -> None:
    [parsed] = parse_script(statement).statements

    assert parsed.schemas == schemas


def test_a_script_read_again_is_read_once() -> None:
    # One change applied to many databases is checked and run once per database.
    script = "UPDATE accounts SET active = true WHERE id = 7"
    assert statements.parse_script(script) is statements.parse_script(script)
    assert statements.parse_script(script + ";") is not statements.parse_script(script)


def test_a_long_script_is_not_kept() -> None:
    script = "SELECT 1;\n" * (statements.CACHED_SCRIPT_CHARS // 10 + 1)
    first = statements.parse_script(script)
    assert first is not statements.parse_script(script)
    assert first == statements.parse_script(script)
