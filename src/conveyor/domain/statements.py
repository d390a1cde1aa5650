"""What a runnable statement is: the one place that reads a task's SQL script, pure.

Plan validation, `updateTaskStatement`, the checks and the runner all ask this module, so the API
refuses at once what the runner would refuse, and the runner still refuses a script stored before
a rule existed. SQL is read by PostgreSQL's own scanner and parser (libpg_query, through pglast):
nothing in Conveyor lexes SQL by hand.
"""

import functools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson
from pglast import parser


class StatementRule(StrEnum):
    """Why a script cannot run; also the task's error code when the runner refuses it."""

    #: The script has no SQL in it, only blanks or comments.
    EMPTY_STATEMENT = "EMPTY_STATEMENT"
    #: The script opens or ends transactions itself, which would break the history guarantee.
    TRANSACTION_CONTROL = "TRANSACTION_CONTROL"


@dataclass(frozen=True)
class StatementRefusal:
    rule: StatementRule
    #: For a person: what is wrong and what to do instead.
    message: str


class StatementKind(StrEnum):
    #: Changes the schema, privileges or other definitions: CREATE, ALTER, DROP, GRANT...
    DDL = "DDL"
    #: Changes rows: INSERT, UPDATE, DELETE, MERGE, COPY, TRUNCATE, or a query holding one.
    DML = "DML"
    #: Reads without changing: SELECT, SHOW, EXPLAIN.
    QUERY = "QUERY"
    #: Neither changes definitions nor rows: SET, DO, CALL, VACUUM, ANALYZE, LOCK, savepoints...
    UTILITY = "UTILITY"
    #: Opens or ends a transaction: BEGIN, COMMIT, ROLLBACK, PREPARE TRANSACTION...
    TRANSACTION_CONTROL = "TRANSACTION_CONTROL"
    #: The parser refused it: see `Statement.syntax_error`.
    UNKNOWN = "UNKNOWN"


@dataclass(frozen=True)
class SyntaxProblem:
    #: PostgreSQL's own message, as the server would give it.
    message: str
    #: Where the parser stopped, as an offset into the whole script (characters).
    offset: int


@dataclass(frozen=True)
class Relation:
    """A table, view, index or sequence a statement names."""

    schema: str | None
    name: str


@dataclass(frozen=True)
class Statement:
    #: From its first token to its last: comments around it and the semicolon left out.
    text: str
    #: Offsets of `text` in the whole script (characters): script[start:end] == text.
    start: int
    end: int
    kind: StatementKind
    #: The parse tree (libpg_query's JSON form): {"IndexStmt": {...}}; empty for syntax errors.
    tree: Mapping[str, Any] = field(compare=False, hash=False, repr=False)
    syntax_error: SyntaxProblem | None = None

    @property
    def node_type(self) -> str | None:
        """The parse tree's node name, e.g. "UpdateStmt"; None when it did not parse."""
        return next(iter(self.tree), None)

    @property
    def node(self) -> Mapping[str, Any]:
        """The fields of the statement's parse node."""
        return next(iter(self.tree.values()), {})

    @property
    def transactional(self) -> bool:
        # What does not parse fails on the server too: inside a transaction, it takes nothing
        # applied before it with it, so that is the safe guess.
        return self.syntax_error is not None or not _runs_only_outside_transaction(
            str(self.node_type), self.node
        )

    @property
    def controls_transaction(self) -> bool:
        return self.kind is StatementKind.TRANSACTION_CONTROL

    @property
    def relations(self) -> tuple[Relation, ...]:
        """The relations the statement names, each once, in order of appearance."""
        seen: dict[Relation, None] = {}
        for node in self._subtrees:
            if "relname" in node and "relpersistence" in node:  # a RangeVar
                seen[Relation(node.get("schemaname"), node["relname"])] = None
        return tuple(seen)

    @property
    def schemas(self) -> tuple[str, ...]:
        """The schemas the statement names explicitly, each once: those of the relations it names
        and of the function, type or domain it defines, and the schema it creates."""
        named = [relation.schema for relation in self.relations if relation.schema is not None]
        if self.node_type == "CreateSchemaStmt":
            named.insert(0, self.node.get("schemaname", ""))
        for key in _DEFINED_NAMES:
            name = self.node.get(key)
            if not isinstance(name, list):  # a domain's typeName is its base type, not its name
                continue
            parts = [part.get("String", {}).get("sval") for part in name]
            if len(parts) >= 2 and isinstance(parts[-2], str):  # [catalog.]schema.name
                named.insert(0, parts[-2])
        return tuple(dict.fromkeys(name for name in named if name))

    @functools.cached_property
    def _subtrees(self) -> tuple[Mapping[str, Any], ...]:
        # Walked once: every rule reads the same tree.
        return tuple(_nodes(self.tree))

    @functools.cached_property
    def _wrapped(self) -> Mapping[str, tuple[Mapping[str, Any], ...]]:
        found: dict[str, list[Mapping[str, Any]]] = {}
        for node in self._subtrees:
            for key, value in node.items():
                if key[:1].isupper() and isinstance(value, dict):
                    found.setdefault(key, []).append(value)
        return {key: tuple(values) for key, values in found.items()}

    def subtrees(self) -> tuple[Mapping[str, Any], ...]:
        """Every mapping in the statement's parse tree, in the order of the source. A node in a
        field of a known type comes bare, without its {"NodeType": ...} wrapper."""
        return self._subtrees

    def nodes(self, node_type: str) -> tuple[Mapping[str, Any], ...]:
        """Every node of `node_type` in the statement's tree wrapped in its type's name: the
        statement itself, and any statement nested in a query."""
        return self._wrapped.get(node_type, ())


# Fields holding the qualified name of what a statement defines: CREATE FUNCTION/PROCEDURE
# (funcname), CREATE TYPE ... AS ENUM (typeName), CREATE DOMAIN (domainname), CREATE AGGREGATE,
# OPERATOR, TYPE (defnames).
_DEFINED_NAMES = ("funcname", "typeName", "domainname", "defnames")


def _nodes(tree: object) -> Iterator[Mapping[str, Any]]:
    """Every mapping in a parse tree, depth first, in the order of the source."""
    stack = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(reversed(item.values()))
        elif isinstance(item, list):
            stack.extend(reversed(item))


# Statements PostgreSQL refuses inside a transaction block. ALTER TYPE ... ADD VALUE is not here
# on purpose: it may run in one since PostgreSQL 12. Nor is REFRESH MATERIALIZED VIEW
# CONCURRENTLY, which may too.
_ALWAYS_OUTSIDE_TRANSACTION = frozenset(
    {
        "VacuumStmt",  # VACUUM; ANALYZE alone (is_vacuumcmd false) may run inside one
        "CreatedbStmt",
        "DropdbStmt",
        "CreateTableSpaceStmt",
        "DropTableSpaceStmt",
        "CreateSubscriptionStmt",
        "DropSubscriptionStmt",
        "AlterSystemStmt",
    }
)


def _options(node: Mapping[str, Any], key: str) -> set[str]:
    return {option["DefElem"]["defname"] for option in node.get(key, []) if "DefElem" in option}


def _runs_only_outside_transaction(node_type: str, node: Mapping[str, Any]) -> bool:
    if node_type in _ALWAYS_OUTSIDE_TRANSACTION:
        return node_type != "VacuumStmt" or bool(node.get("is_vacuumcmd"))
    match node_type:
        case "IndexStmt" | "DropStmt":
            return bool(node.get("concurrent"))
        case "ReindexStmt":
            return "concurrently" in _options(node, "params") or node.get("kind") in {
                "REINDEX_OBJECT_SCHEMA",
                "REINDEX_OBJECT_DATABASE",
                "REINDEX_OBJECT_SYSTEM",
            }
        case "AlterTableStmt":
            return any(
                command["AlterTableCmd"].get("def", {}).get("PartitionCmd", {}).get("concurrent")
                for command in node.get("cmds", [])
            )
        case "ClusterStmt":
            return "relation" not in node  # CLUSTER of every clustered table
        case "AlterDatabaseStmt":
            return "tablespace" in _options(node, "options")
        case "DiscardStmt":
            return node.get("target") == "DISCARD_ALL"
    return False


_DATA_CHANGES = frozenset({"InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"})
_QUERIES = frozenset({"SelectStmt", "VariableShowStmt", "ExplainStmt"})
_UTILITIES = frozenset(
    {
        "VariableSetStmt",
        "DoStmt",
        "CallStmt",
        "VacuumStmt",
        "ClusterStmt",
        "ReindexStmt",
        "LockStmt",
        "NotifyStmt",
        "ListenStmt",
        "UnlistenStmt",
        "CheckPointStmt",
        "DiscardStmt",
        "LoadStmt",
        "ConstraintsSetStmt",
        "RefreshMatViewStmt",
        "PrepareStmt",
        "ExecuteStmt",
        "DeallocateStmt",
        "DeclareCursorStmt",
        "FetchStmt",
        "ClosePortalStmt",
    }
)
# Savepoints stay inside the change's own transaction.
_SAVEPOINTS = frozenset({"TRANS_STMT_SAVEPOINT", "TRANS_STMT_RELEASE", "TRANS_STMT_ROLLBACK_TO"})


def _kind(tree: Mapping[str, Any]) -> StatementKind:
    node_type, node = next(iter(tree.items()))
    if node_type == "TransactionStmt":
        if node.get("kind") in _SAVEPOINTS:
            return StatementKind.UTILITY
        return StatementKind.TRANSACTION_CONTROL
    if node_type in _DATA_CHANGES or node_type in {"CopyStmt", "TruncateStmt"}:
        return StatementKind.DML
    if node_type == "SelectStmt" and "intoClause" in node:
        return StatementKind.DDL  # SELECT ... INTO creates a table
    if node_type in _QUERIES:
        modifies = any(key in _DATA_CHANGES for child in _nodes(node) for key in child)
        return StatementKind.DML if modifies else StatementKind.QUERY
    if node_type in _UTILITIES:
        return StatementKind.UTILITY
    return StatementKind.DDL


@dataclass(frozen=True)
class _Piece:
    start: int
    end: int


_COMMENTS = frozenset({"SQL_COMMENT", "C_COMMENT"})
_ROUTINE_HEADS = (("CREATE", "FUNCTION"), ("CREATE", "PROCEDURE"))
_REPLACED_ROUTINE_HEADS = (
    ("CREATE", "OR", "REPLACE", "FUNCTION"),
    ("CREATE", "OR", "REPLACE", "PROCEDURE"),
)


def _pieces(script: str, tokens: Sequence[parser.Token]) -> tuple[list[_Piece], int | None]:
    """Statements of `script` split at semicolons as psql splits a file, and where the last one
    starts when no semicolon ends it (else None)."""
    pieces: list[_Piece] = []
    start: int | None = None
    end = 0
    words: list[str] = []
    parentheses = 0
    # A SQL-standard routine body (BEGIN ATOMIC ... END) holds semicolons of its own; like psql,
    # count BEGIN/CASE against END inside CREATE [OR REPLACE] FUNCTION/PROCEDURE.
    blocks = 0
    for token in tokens:
        if token.name in _COMMENTS:
            continue
        if token.name == "ASCII_59" and parentheses == 0 and blocks == 0:
            if start is not None:
                pieces.append(_Piece(start, end))
            start, words = None, []
            continue
        if start is None:
            start = token.start
        end = token.end + 1
        if token.name == "ASCII_40":
            parentheses += 1
        elif token.name == "ASCII_41":
            parentheses = max(parentheses - 1, 0)
        elif token.name == "IDENT" or token.kind != "NO_KEYWORD":
            word = script[token.start : end].upper()
            if len(words) < 4:
                words.append(word)
            defines_routine = tuple(words[:2]) in _ROUTINE_HEADS or (
                tuple(words[:4]) in _REPLACED_ROUTINE_HEADS
            )
            if parentheses == 0 and defines_routine:
                if word == "BEGIN" or (word == "CASE" and blocks > 0):
                    blocks += 1
                elif word == "END" and blocks > 0:
                    blocks -= 1
    if start is not None:
        pieces.append(_Piece(start, end))
    return pieces, start


def _error_offset(error: parser.ParseError, end_of_input: int) -> int:
    """Where the scanner or parser stopped; no position means the end of the input."""
    offset = error.args[1] if len(error.args) > 1 else None
    return end_of_input if offset is None else int(offset)


def _split(script: str) -> list[_Piece]:
    try:
        pieces, unterminated = _pieces(script, parser.scan(script))
    except parser.ParseError as error:
        # An unterminated quote or comment runs to the end: what came before it still splits,
        # and the statement it is in takes the rest of the script.
        stop = _error_offset(error, len(script))
        try:
            pieces, unterminated = _pieces(script, parser.scan(script[:stop]))
        except parser.ParseError:
            pieces, unterminated = [], None
        first = stop if unterminated is None else pieces.pop().start
        return [*pieces, _Piece(first, len(script.rstrip()))]
    return pieces


def _parse(text: str) -> list[dict[str, Any]]:
    parsed: dict[str, Any] = orjson.loads(parser.parse_sql_json(text))
    return [item["stmt"] for item in parsed.get("stmts", [])]


def _statement(script: str, piece: _Piece, tree: Mapping[str, Any] | None) -> Statement:
    text = script[piece.start : piece.end]
    if tree is None:
        try:
            [tree] = _parse(text)
        except parser.ParseError as error:
            offset = piece.start + _error_offset(error, len(text))
            problem = SyntaxProblem(str(error.args[0]), min(offset, piece.end))
            return Statement(text, piece.start, piece.end, StatementKind.UNKNOWN, {}, problem)
        except ValueError:  # more than one statement where psql sees one: the server decides
            return Statement(text, piece.start, piece.end, StatementKind.UNKNOWN, {}, None)
    return Statement(text, piece.start, piece.end, _kind(tree), tree)


@dataclass(frozen=True)
class Script:
    """A task's SQL script, read once: its statements and what running it takes."""

    text: str
    statements: tuple[Statement, ...]

    @property
    def transactional(self) -> bool:
        """False when any statement cannot run inside a transaction block."""
        return all(statement.transactional for statement in self.statements)

    @property
    def refusal(self) -> StatementRefusal | None:
        """Why Conveyor will not run the script, or None when it may."""
        if not self.statements:
            return StatementRefusal(
                StatementRule.EMPTY_STATEMENT, "the statement holds no SQL, only comments"
            )
        if any(statement.controls_transaction for statement in self.statements):
            return StatementRefusal(
                StatementRule.TRANSACTION_CONTROL,
                "the statement must not begin or end transactions (BEGIN, COMMIT, ROLLBACK...): "
                "Conveyor runs each change in a transaction of its own",
            )
        return None


#: Scripts up to this many characters are read once and the result kept, for the last
#: CACHED_SCRIPTS of them: one change applied to many databases is one script, which the
#: checks and the runner read again for every database.
CACHED_SCRIPT_CHARS = 16_384
CACHED_SCRIPTS = 128


def parse_script(script: str) -> Script:
    """`script` split into statements the way psql splits a file, each parsed by PostgreSQL's
    parser. The result is shared: nothing may change it."""
    if len(script) <= CACHED_SCRIPT_CHARS:
        return _parse_script_cached(script)
    return _parse_script(script)


def _parse_script(script: str) -> Script:
    unreadable = _unreadable(script)
    if unreadable is not None:
        return _unreadable_script(script, unreadable)
    pieces = _split(script)
    trees: list[dict[str, Any]] | None
    try:
        trees = _parse(script)
    except parser.ParseError:
        trees = None
    if trees is None or len(trees) != len(pieces):
        # A syntax error somewhere: each statement is parsed alone, to find which.
        return Script(script, tuple(_statement(script, piece, None) for piece in pieces))
    return Script(
        script,
        tuple(_statement(script, piece, tree) for piece, tree in zip(pieces, trees, strict=True)),
    )


_parse_script_cached = functools.lru_cache(maxsize=CACHED_SCRIPTS)(_parse_script)


def _unreadable(script: str) -> SyntaxProblem | None:
    """What keeps PostgreSQL from reading `script` at all, before any parser does."""
    # The parser reads a C string: a NUL would end the script there, and drop the rest unseen.
    nul = script.find("\x00")
    if nul >= 0:
        return SyntaxProblem("the statement holds a NUL character, which PostgreSQL refuses", nul)
    try:
        script.encode()
    except UnicodeEncodeError as error:
        message = "the statement holds a lone surrogate, which is not valid UTF-8"
        return SyntaxProblem(message, error.start)
    return None


def is_readable(script: str) -> bool:
    """Whether PostgreSQL can read `script` as text at all (no NUL, valid UTF-8)."""
    return _unreadable(script) is None


def _unreadable_script(script: str, problem: SyntaxProblem) -> Script:
    # Not split: whatever runs it sends it whole, and the server refuses it whole.
    start = len(script) - len(script.lstrip())
    end = len(script.rstrip())
    statement = Statement(script[start:end], start, end, StatementKind.UNKNOWN, {}, problem)
    return Script(script, (statement,))


def refusal_of(script: str) -> StatementRefusal | None:
    """Why Conveyor will not run `script`, or None when it may."""
    return parse_script(script).refusal


def is_transactional(script: str) -> bool:
    """False when any statement of `script` cannot run inside a transaction block."""
    return parse_script(script).transactional


def line_and_column(script: str, offset: int) -> tuple[int, int]:
    """The 1-based line and column (in characters) of `offset` in `script`."""
    line = script.count("\n", 0, offset) + 1
    column = offset - (script.rfind("\n", 0, offset) + 1) + 1
    return line, column
