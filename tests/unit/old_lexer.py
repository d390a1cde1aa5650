"""The hand-written lexer Conveyor used before pglast, kept only as an oracle for property tests.

Frozen copy of the old `conveyor.domain.statements` (removed from src/): where it and the parser
both answer, they must agree on how a script splits and whether it runs in a transaction.
"""

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum


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


# One lexeme of PostgreSQL's SQL, as far as splitting and classifying need: strings (standard,
# E'' with backslash escapes), quoted identifiers, dollar quotes and comments are opaque. The
# blanks before it go with it, and runs of punctuation or digits are one lexeme: the fewer
# lexemes, the faster (a plan may hold thousands of scripts, read while the client waits).
_LEXEME = re.compile(
    r"""
    \s*
    (?:
      (?P<line_comment>--[^\n]*)
    | (?P<block_comment>/\*)
    | (?P<dollar_quote>\$(?:[^\W\d]\w*)?\$)
    | (?P<string>[eE]'(?:[^'\\]+|\\.|'')*'?|'(?:[^']+|'')*'?)
    | (?P<quoted_identifier>"(?:[^"]+|"")*"?)
    | (?P<word>[^\W\d][\w$]*)
    | (?P<open>\()
    | (?P<close>\))
    | (?P<semicolon>;)
    | (?P<other>[^\s\w'"$;()/-]+|\d+|\S)
    )
    """,
    re.VERBOSE | re.DOTALL,
)
_COMMENT_DELIMITER = re.compile(r"/\*|\*/")


def _lexemes(script: str) -> Iterator[tuple[str, int, int]]:
    """(kind, start, end) of each lexeme of `script`, blanks left out."""
    position = 0
    while position < len(script):
        match = _LEXEME.match(script, position)
        if match is None:  # `other` matches any other character: only blanks are left
            return
        kind, end = str(match.lastgroup), match.end()
        position = match.start(kind)
        if kind == "block_comment":
            end = _block_comment_end(script, position)
        elif kind == "dollar_quote":
            tag = match.group(kind)
            closing = script.find(tag, end)
            end = len(script) if closing < 0 else closing + len(tag)
        yield kind, position, end
        position = end


def _block_comment_end(script: str, start: int) -> int:
    # Block comments nest in PostgreSQL.
    depth = 0
    for delimiter in _COMMENT_DELIMITER.finditer(script, start):
        depth += 1 if delimiter.group() == "/*" else -1
        if depth == 0:
            return delimiter.end()
    return len(script)


@dataclass(frozen=True)
class Statement:
    text: str
    #: Its bare words outside parentheses, upper-cased: enough to tell what it is.
    words: tuple[str, ...]

    @property
    def transactional(self) -> bool:
        return not _runs_only_outside_transaction(self.words)

    @property
    def controls_transaction(self) -> bool:
        first = self.words[0] if self.words else ""
        if first == "ROLLBACK":
            return "TO" not in self.words  # ROLLBACK TO SAVEPOINT stays inside the transaction
        return first in {"BEGIN", "START", "COMMIT", "END", "ABORT"} or self.words[:2] == (
            "PREPARE",
            "TRANSACTION",
        )


# PostgreSQL refuses these inside a transaction block. ALTER TYPE ... ADD VALUE is not here on
# purpose: it may run in one since PostgreSQL 12. Nor is REFRESH MATERIALIZED VIEW
# CONCURRENTLY, which may too.
_OUTSIDE_TRANSACTION = frozenset(
    {
        ("CREATE", "DATABASE"),
        ("DROP", "DATABASE"),
        ("CREATE", "TABLESPACE"),
        ("DROP", "TABLESPACE"),
        ("CREATE", "SUBSCRIPTION"),
        ("DROP", "SUBSCRIPTION"),
        ("ALTER", "SYSTEM"),
        ("REINDEX", "SCHEMA"),
        ("REINDEX", "DATABASE"),
        ("REINDEX", "SYSTEM"),
        ("DISCARD", "ALL"),
    }
)


def _runs_only_outside_transaction(words: tuple[str, ...]) -> bool:
    first, second = (*words, "", "")[:2]
    if first == "VACUUM" or (first, second) in _OUTSIDE_TRANSACTION:
        return True
    if first in {"CREATE", "DROP", "REINDEX", "ALTER"} and "CONCURRENTLY" in words:
        # CREATE/DROP INDEX, REINDEX, ALTER TABLE ... DETACH PARTITION ... CONCURRENTLY.
        return True
    if first == "CLUSTER":
        return words[1:] in {(), ("VERBOSE",)}  # CLUSTER of every clustered table
    if (first, second) == ("ALTER", "DATABASE"):
        return ("SET", "TABLESPACE") in itertools.pairwise(words)
    return False


def _defines_routine(words: list[str]) -> bool:
    return words[:2] in (["CREATE", "FUNCTION"], ["CREATE", "PROCEDURE"]) or words[:4] in (
        ["CREATE", "OR", "REPLACE", "FUNCTION"],
        ["CREATE", "OR", "REPLACE", "PROCEDURE"],
    )


def _split(script: str) -> list[Statement]:
    """The statements of `script`, split at semicolons the way psql splits a file."""
    statements: list[Statement] = []
    start: int | None = None
    end = 0
    words: list[str] = []
    parentheses = 0
    # A SQL-standard routine body (BEGIN ATOMIC ... END) holds semicolons of its own; like
    # psql, count BEGIN/CASE against END inside CREATE [OR REPLACE] FUNCTION/PROCEDURE.
    blocks = 0
    for kind, begin, finish in _lexemes(script):
        if kind in {"line_comment", "block_comment"}:
            continue
        if kind == "semicolon" and parentheses == 0 and blocks == 0:
            if start is not None:
                statements.append(Statement(script[start:end], tuple(words)))
            start, words = None, []
            continue
        if start is None:
            start = begin
        end = finish
        if kind == "open":
            parentheses += 1
        elif kind == "close":
            parentheses = max(parentheses - 1, 0)
        elif kind == "word" and parentheses == 0:
            word = script[begin:finish].upper()
            words.append(word)
            if word in {"BEGIN", "CASE", "END"} and _defines_routine(words):
                if word == "BEGIN" or (word == "CASE" and blocks > 0):
                    blocks += 1
                elif word == "END" and blocks > 0:
                    blocks -= 1
    if start is not None:
        statements.append(Statement(script[start:end], tuple(words)))
    return statements


@dataclass(frozen=True)
class Script:
    """A task's SQL script, read once: its statements and what running it takes."""

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


def parse_script(script: str) -> Script:
    """`script` split into statements at semicolons, the way psql splits a file."""
    return Script(tuple(_split(script)))


def refusal_of(script: str) -> StatementRefusal | None:
    """Why Conveyor will not run `script`, or None when it may."""
    return parse_script(script).refusal


def is_transactional(script: str) -> bool:
    """False when any statement of `script` cannot run inside a transaction block."""
    return parse_script(script).transactional
