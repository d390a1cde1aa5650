"""Checks on a task's statement before it runs, and the review policy that weighs them; pure.

A task's findings come from three places: the parser (syntax), the task's type (what kind of
statement it may hold) and the SQL review rules, squawk's (its report is parsed here, the binary is
run by `runner.squawk`) and our own where squawk has none. A policy per environment gives each rule
a level, or turns it off, and says from which level a finding blocks the task.
"""

import dataclasses
import enum
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from conveyor.domain.statements import (
    Script,
    Statement,
    StatementKind,
    StatementRule,
    line_and_column,
    parse_script,
)
from conveyor.domain.statuses import ApprovalPolicy, TaskType


class CheckLevel(enum.Enum):
    #: Blocks the task under every default policy.
    ERROR = "ERROR"
    #: Worth a look before approving; blocks only where a policy says so.
    WARNING = "WARNING"
    #: For information.
    NOTICE = "NOTICE"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]

    def at_least(self, other: "CheckLevel") -> bool:
        return self.severity >= other.severity


_SEVERITY = {CheckLevel.NOTICE: 1, CheckLevel.WARNING: 2, CheckLevel.ERROR: 3}


@dataclass(frozen=True)
class Finding:
    #: e.g. "syntax", "ddl-in-data-update", "update-without-where", or one of squawk's rule names.
    rule: str
    level: CheckLevel
    message: str
    #: The offending statement's text.
    statement: str | None
    #: 1-based, in the task's whole statement.
    line: int | None
    #: 1-based, in characters.
    column: int | None
    doc_url: str | None


@dataclass(frozen=True)
class ReviewPolicy:
    #: rule -> level; None turns the rule off. A rule not named keeps the level it came with
    #: (squawk's own: Warning -> WARNING, Error -> ERROR).
    levels: Mapping[str, CheckLevel | None]
    #: Findings at this level or worse block the task.
    blocking: CheckLevel


_OURS = "README.md#"
_SQUAWK = "https://squawkhq.com/docs/"

#: Conveyor's own rules, each documented under a README heading of its name.
SYNTAX = "syntax"
STATEMENT_CANNOT_RUN = "statement-cannot-run"
DDL_IN_DATA_UPDATE = "ddl-in-data-update"
DML_IN_SCHEMA_UPDATE = "dml-in-schema-update"
UPDATE_WITHOUT_WHERE = "update-without-where"
DELETE_WITHOUT_WHERE = "delete-without-where"
TRUNCATE = "truncate"
DROP_DATABASE = "drop-database"
GRANT_TO_PUBLIC = "grant-to-public"

OWN_RULES = (
    SYNTAX,
    STATEMENT_CANNOT_RUN,
    DDL_IN_DATA_UPDATE,
    DML_IN_SCHEMA_UPDATE,
    UPDATE_WITHOUT_WHERE,
    DELETE_WITHOUT_WHERE,
    TRUNCATE,
    DROP_DATABASE,
    GRANT_TO_PUBLIC,
)

# Rules whose findings mean rows or objects that cannot come back: errors where the data
# matters (protected environments), warnings elsewhere.
DATA_LOSS_RULES = (
    UPDATE_WITHOUT_WHERE,
    DELETE_WITHOUT_WHERE,
    TRUNCATE,
    DROP_DATABASE,
    "ban-drop-column",
    "ban-drop-table",
    "ban-drop-schema",
)

# squawk's rules Conveyor's own cover, or that the runner satisfies itself.
_OFF_BY_DEFAULT: Mapping[str, str] = {
    # The runner sets lock_timeout and statement_timeout before every change (runner/targets.py):
    # left on, they flag nearly every real change (FINDINGS.md).
    "require-timeout-settings": "the runner sets lock_timeout and statement_timeout itself",
    "require-lock-timeout": "the runner sets lock_timeout itself",
    "require-statement-timeout": "the runner sets statement_timeout itself",
    # The parser's syntax errors are the server's; squawk's parser is its own and differs.
    "syntax-error": "Conveyor's syntax rule uses PostgreSQL's own parser",
    "ban-drop-database": "Conveyor's drop-database rule covers it, with or without squawk",
    "ban-truncate-cascade": "Conveyor's truncate rule covers every TRUNCATE",
}

# squawk's rules on statements that lock or rewrite a table for long, or break clients: worth
# a look before approving, a block nowhere by default.
_LOCKS_AND_BREAKAGE = (
    "require-concurrent-index-creation",
    "require-concurrent-index-deletion",
    "constraint-missing-not-valid",
    "adding-field-with-default",
    "adding-foreign-key-constraint",
    "adding-not-nullable-field",
    "adding-required-field",
    "adding-serial-primary-key-field",
    "changing-column-type",
    "disallowed-unique-constraint",
    "renaming-column",
    "renaming-table",
    "ban-drop-not-null",
    "ban-concurrent-index-creation-in-transaction",
    "ban-create-domain-with-constraint",
    "ban-alter-domain-with-add-constraint",
)

# Style and robustness advice: noticed, never in the way.
_NOTICES = (
    "prefer-robust-stmts",
    "prefer-bigint-over-int",
    "prefer-bigint-over-smallint",
    "prefer-identity",
    "prefer-text-field",
    "prefer-timestamp-tz",
    "ban-char-field",
)


def is_protected(approval_policy: ApprovalPolicy) -> bool:
    """An environment whose tasks wait for a person's approval holds data that matters."""
    return approval_policy is ApprovalPolicy.MANUAL


def default_review_policy(protected: bool) -> ReviewPolicy:
    """Errors block everywhere; data-loss rules are errors where `protected` (the environment's
    tasks wait for a person's approval: ApprovalPolicy.MANUAL), warnings elsewhere."""
    levels: dict[str, CheckLevel | None] = {
        SYNTAX: CheckLevel.ERROR,
        STATEMENT_CANNOT_RUN: CheckLevel.ERROR,
        DDL_IN_DATA_UPDATE: CheckLevel.ERROR,
        DML_IN_SCHEMA_UPDATE: CheckLevel.WARNING,
        GRANT_TO_PUBLIC: CheckLevel.WARNING,
    }
    levels.update(dict.fromkeys(_LOCKS_AND_BREAKAGE, CheckLevel.WARNING))
    levels.update(dict.fromkeys(_NOTICES, CheckLevel.NOTICE))
    data_loss = CheckLevel.ERROR if protected else CheckLevel.WARNING
    levels.update(dict.fromkeys(DATA_LOSS_RULES, data_loss))
    levels.update(dict.fromkeys(_OFF_BY_DEFAULT, None))
    return ReviewPolicy(levels, blocking=CheckLevel.ERROR)


def doc_url(rule: str) -> str:
    """Where a person reads what `rule` means and how to satisfy it."""
    return f"{_OURS}{rule}" if rule in OWN_RULES else f"{_SQUAWK}{rule}"


def blocking_findings(findings: Sequence[Finding], policy: ReviewPolicy) -> tuple[Finding, ...]:
    """The findings that keep the task from running under `policy`."""
    return tuple(finding for finding in findings if finding.level.at_least(policy.blocking))


def check_statement(
    sql: str,
    task_type: TaskType,
    policy: ReviewPolicy,
    linter_findings: Sequence[Finding] = (),
) -> tuple[Finding, ...]:
    """Every finding on `sql` for a task of `task_type`, at the levels `policy` gives, in the
    order of the script; `linter_findings` (squawk's) are weighed by the same policy."""
    script = parse_script(sql)
    found = [*_own_findings(script, task_type), *linter_findings]
    kept = weigh(found, policy)
    return tuple(sorted(kept, key=lambda finding: (finding.line or 0, finding.column or 0)))


def weigh(findings: Iterable[Finding], policy: ReviewPolicy) -> tuple[Finding, ...]:
    """`findings` at the levels `policy` gives their rules, without those it turns off; a
    rule it does not name keeps its level. For findings `check_statement` does not make
    (the target's) as for its own."""
    weighed = (_weighed(finding, policy) for finding in findings)
    return tuple(finding for finding in weighed if finding is not None)


def _weighed(finding: Finding, policy: ReviewPolicy) -> Finding | None:
    if finding.rule not in policy.levels:
        return finding
    level = policy.levels[finding.rule]
    if level is None:
        return None
    return dataclasses.replace(finding, level=level)


# A rule a policy does not name reports at its level outside protected environments.
_UNNAMED_LEVELS = default_review_policy(protected=False).levels


def _finding(script: Script, statement: Statement, rule: str, message: str) -> Finding:
    line, column = line_and_column(script.text, statement.start)
    level = _UNNAMED_LEVELS.get(rule) or CheckLevel.ERROR
    return Finding(rule, level, message, statement.text, line, column, doc_url(rule))


def _own_findings(script: Script, task_type: TaskType) -> Iterator[Finding]:
    refusal = script.refusal
    if refusal is not None and refusal.rule is StatementRule.EMPTY_STATEMENT:
        level = _UNNAMED_LEVELS.get(STATEMENT_CANNOT_RUN) or CheckLevel.ERROR
        url = doc_url(STATEMENT_CANNOT_RUN)
        yield Finding(STATEMENT_CANNOT_RUN, level, refusal.message, None, 1, 1, url)
    for statement in script.statements:
        if statement.syntax_error is not None:
            yield _syntax_finding(script, statement)
            continue
        for rule in _STATEMENT_RULES:
            message = rule.applies(statement, task_type)
            if message is not None:
                yield _finding(script, statement, rule.name, message)


def _syntax_finding(script: Script, statement: Statement) -> Finding:
    problem = statement.syntax_error
    assert problem is not None
    message = problem.message
    if statement.text.startswith("\\"):
        message += ": psql meta-commands (\\i, \\set, \\connect...) are not SQL"
    line, column = line_and_column(script.text, problem.offset)
    return Finding(SYNTAX, CheckLevel.ERROR, message, statement.text, line, column, doc_url(SYNTAX))


@dataclass(frozen=True)
class _StatementRule:
    name: str
    #: The finding's message when the rule applies to the statement in a task of that type.
    applies: Callable[[Statement, TaskType], str | None]


def _cannot_run(statement: Statement, task_type: TaskType) -> str | None:
    if statement.kind is StatementKind.TRANSACTION_CONTROL:
        return (
            "transaction control (BEGIN, COMMIT, ROLLBACK, PREPARE TRANSACTION...) cannot run in a "
            "change: Conveyor runs each change in a transaction of its own"
        )
    if statement.node_type == "CopyStmt" and "filename" not in statement.node:
        direction = "FROM STDIN" if statement.node.get("is_from") else "TO STDOUT"
        return f"COPY ... {direction} needs a client to feed or read the data: use INSERT or a file"
    return None


def _ddl_in_data_update(statement: Statement, task_type: TaskType) -> str | None:
    if task_type is TaskType.DATA_UPDATE and statement.kind is StatementKind.DDL:
        return "a DATA_UPDATE task changes rows only: schema changes belong in a SCHEMA_UPDATE task"
    return None


def _dml_in_schema_update(statement: Statement, task_type: TaskType) -> str | None:
    if task_type is TaskType.SCHEMA_UPDATE and statement.kind is StatementKind.DML:
        return "a SCHEMA_UPDATE task changes rows here: data changes belong in a DATA_UPDATE task"
    return None


def _without_where(node_type: str, verb: str) -> Callable[[Statement, TaskType], str | None]:
    def applies(statement: Statement, task_type: TaskType) -> str | None:
        for node in statement.nodes(node_type):
            if "whereClause" not in node:
                table = node.get("relation", {}).get("relname", "the table")
                return f"{verb} without WHERE changes every row of {table}"
        return None

    return applies


def _truncate(statement: Statement, task_type: TaskType) -> str | None:
    if statement.node_type == "TruncateStmt":
        return "TRUNCATE removes every row, and cannot be undone once committed"
    return None


def _drop_database(statement: Statement, task_type: TaskType) -> str | None:
    if statement.node_type == "DropdbStmt":
        return f"DROP DATABASE {statement.node.get('dbname', '')} removes a whole database"
    return None


def _grant_to_public(statement: Statement, task_type: TaskType) -> str | None:
    # GRANT itself, or bare inside ALTER DEFAULT PRIVILEGES.
    grants = (node for node in statement.subtrees() if "is_grant" in node and "grantees" in node)
    for grant in grants:
        grantees = grant.get("grantees", [])
        to_public = any(
            grantee.get("RoleSpec", {}).get("roletype") == "ROLESPEC_PUBLIC" for grantee in grantees
        )
        if grant.get("is_grant") and to_public:
            return "GRANT ... TO PUBLIC gives the privilege to every role, present and future"
    return None


_STATEMENT_RULES = (
    _StatementRule(STATEMENT_CANNOT_RUN, _cannot_run),
    _StatementRule(DDL_IN_DATA_UPDATE, _ddl_in_data_update),
    _StatementRule(DML_IN_SCHEMA_UPDATE, _dml_in_schema_update),
    _StatementRule(UPDATE_WITHOUT_WHERE, _without_where("UpdateStmt", "UPDATE")),
    _StatementRule(DELETE_WITHOUT_WHERE, _without_where("DeleteStmt", "DELETE")),
    _StatementRule(TRUNCATE, _truncate),
    _StatementRule(DROP_DATABASE, _drop_database),
    _StatementRule(GRANT_TO_PUBLIC, _grant_to_public),
)

_SQUAWK_LEVELS = {"Error": CheckLevel.ERROR, "Warning": CheckLevel.WARNING}


def parse_squawk_report(json_text: str, sql: str) -> tuple[Finding, ...]:
    """Findings from `squawk --reporter json` run over `sql` (its lines 0-based, its columns in
    bytes); each names the statement of `sql` it falls in."""
    return squawk_findings(json.loads(json_text), sql)


def squawk_findings(entries: Sequence[Mapping[str, Any]], sql: str) -> tuple[Finding, ...]:
    """Findings from the entries of squawk's JSON report that are about `sql`."""
    if not entries:
        return ()
    script = parse_script(sql)
    lines = sql.split("\n")
    findings = []
    for entry in entries:
        line_index = int(entry["line"])
        text_of_line = lines[line_index] if line_index < len(lines) else ""
        byte_column = int(entry["column"])
        column = len(text_of_line.encode()[:byte_column].decode(errors="ignore")) + 1
        offset = sum(len(line) + 1 for line in lines[:line_index]) + column - 1
        message = str(entry["message"])
        if entry.get("help"):
            message = f"{message} {entry['help']}"
        rule = str(entry["rule_name"])
        findings.append(
            Finding(
                rule,
                _SQUAWK_LEVELS.get(str(entry.get("level")), CheckLevel.WARNING),
                message,
                _statement_at(script, offset),
                line_index + 1,
                column,
                doc_url(rule),
            )
        )
    return tuple(findings)


def _statement_at(script: Script, offset: int) -> str | None:
    for statement in script.statements:
        if offset < statement.end:
            return statement.text
    return None
