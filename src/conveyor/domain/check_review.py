"""What a task's check results mean for it, without IO: the review policy an environment
applies, whether its checks hold it back, who may override them, and the roll-ups the API shows.

The findings themselves come from `domain.checks` (statement rules, squawk's report) and from the
worker (the target, dry runs); this module weighs and counts them.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from conveyor.domain.checks import (
    OWN_RULES,
    CheckLevel,
    Finding,
    ReviewPolicy,
    blocking_findings,
    default_review_policy,
    is_protected,
)
from conveyor.domain.permissions import Principal, Role
from conveyor.domain.statuses import ApprovalPolicy, TaskStatus
from conveyor.errors import ConveyorError, ErrorCode, FieldPath, Problem, conflict, forbidden

#: Our rules about the target, each documented under a README heading of its name.
TARGET_CONNECTION = "target-connection"
TARGET_DATABASE_MISSING = "target-database-missing"
TARGET_PRIVILEGE = "target-privilege"
#: A dry run's outcome.
DRY_RUN = "dry-run"
TARGET_RULES = (TARGET_CONNECTION, TARGET_DATABASE_MISSING, TARGET_PRIVILEGE)

#: The level squawk gives each rule of its own that it reports: "Error" for its `syntax-error`,
#: "Warning" for every other (squawk 2.70; tests/integration/test_squawk.py holds the installed
#: binary to it). A policy that does not name a squawk rule leaves it at this level.
SQUAWK_SYNTAX_ERROR = "syntax-error"
SQUAWK_OWN_LEVEL = CheckLevel.WARNING
SQUAWK_OWN_LEVELS: Mapping[str, CheckLevel] = {SQUAWK_SYNTAX_ERROR: CheckLevel.ERROR}
#: Rules that are never squawk's: every other name a policy sets may be one of squawk's.
_NOT_SQUAWK = frozenset((*OWN_RULES, *TARGET_RULES, DRY_RUN))

#: The most characters an override's reason may have.
OVERRIDE_REASON_MAX_LENGTH = 1_000
#: How many rule levels one environment's policy may set.
POLICY_RULES_MAX = 200
RULE_NAME_MAX_LENGTH = 100


class CheckSource(StrEnum):
    #: The statement's own checks: syntax, kind against task type, SQL review rules.
    STATEMENT = "STATEMENT"
    #: The target as it is: connection, database, privileges.
    TARGET = "TARGET"
    #: A dry run on the target, rolled back. It informs and never blocks: the target it ran on
    #: has not seen the earlier stages' changes yet.
    DRY_RUN = "DRY_RUN"


class CheckGate(StrEnum):
    """Where a task's checks leave it."""

    #: Not finished for the task's current statement: it does not run yet.
    PENDING = "PENDING"
    #: No blocking finding.
    PASSED = "PASSED"
    #: Blocking findings: it does not run until the statement is fixed or a DBA overrides.
    FAILED = "FAILED"
    #: Blocking findings a DBA let pass, for this statement version.
    OVERRIDDEN = "OVERRIDDEN"


class _TaskChecksRow(Protocol):
    @property
    def statement_version(self) -> int: ...
    @property
    def checked_version(self) -> int | None: ...
    @property
    def blocking_rules(self) -> list[str]: ...
    @property
    def checks_overridden_version(self) -> int | None: ...


@dataclass(frozen=True)
class CheckFacts:
    """What about a task's checks decides whether it may run."""

    statement_version: int
    #: The statement version whose checks finished, or None.
    checked_version: int | None
    blocking_rules: tuple[str, ...]
    overridden_version: int | None

    @classmethod
    def of(cls, task: _TaskChecksRow) -> "CheckFacts":
        return cls(
            statement_version=task.statement_version,
            checked_version=task.checked_version,
            blocking_rules=tuple(task.blocking_rules),
            overridden_version=task.checks_overridden_version,
        )

    @property
    def gate(self) -> CheckGate:
        if self.checked_version != self.statement_version:
            return CheckGate.PENDING
        if not self.blocking_rules:
            return CheckGate.PASSED
        if self.overridden_version == self.statement_version:
            return CheckGate.OVERRIDDEN
        return CheckGate.FAILED

    @property
    def holding_rules(self) -> tuple[str, ...]:
        """The rules that keep the task from running now (empty unless FAILED)."""
        return self.blocking_rules if self.gate is CheckGate.FAILED else ()


#: Every level name a policy may give a rule.
LEVEL_NAMES = tuple(level.value for level in CheckLevel)


def environment_review_policy(
    approval_policy: ApprovalPolicy,
    levels: Mapping[str, str | None],
    blocking: str | None,
) -> ReviewPolicy:
    """The policy of an environment: the defaults for its kind (protected when its tasks wait
    for approval), with the levels and blocking level it sets itself on top."""
    default = default_review_policy(is_protected(approval_policy))
    merged: dict[str, CheckLevel | None] = dict(default.levels)
    merged.update(
        {rule: None if level is None else CheckLevel(level) for rule, level in levels.items()}
    )
    return ReviewPolicy(
        merged, blocking=default.blocking if blocking is None else CheckLevel(blocking)
    )


class _EnvironmentRow(Protocol):
    @property
    def approval_policy(self) -> ApprovalPolicy: ...
    @property
    def review_levels(self) -> dict[str, str | None]: ...
    @property
    def review_blocking_level(self) -> str | None: ...


def review_policy_of(environment: _EnvironmentRow) -> ReviewPolicy:
    """The review policy of an environment as stored."""
    return environment_review_policy(
        environment.approval_policy, environment.review_levels, environment.review_blocking_level
    )


def linter_could_block(policy: ReviewPolicy) -> bool:
    """Whether any finding squawk could report (or its absence: `linter-unavailable`) would
    block a task under `policy`: a rule the policy names at its blocking level or worse (any
    name that is not one of Conveyor's own rules counts as squawk's), or a rule it does not
    name at squawk's own level.

    When none could, squawk's findings cannot change whether the task may run: its checks'
    gate is decided by Conveyor's own rules and the target's, and squawk's findings, recorded
    after them, are advisory. When one could, the gate waits for squawk too."""
    named = (
        level
        for rule, level in policy.levels.items()
        if rule not in _NOT_SQUAWK and level is not None
    )
    unnamed = (level for rule, level in SQUAWK_OWN_LEVELS.items() if rule not in policy.levels)
    return any(level.at_least(policy.blocking) for level in (*named, *unnamed, SQUAWK_OWN_LEVEL))


def blocking_rules(findings: Sequence[Finding], policy: ReviewPolicy) -> tuple[str, ...]:
    """The rules of the findings that block under `policy`, each once, in finding order."""
    return tuple(dict.fromkeys(finding.rule for finding in blocking_findings(findings, policy)))


def policy_problems(
    rules: Sequence[tuple[str, str | None]], blocking: str | None, field: FieldPath
) -> list[Problem]:
    """What is wrong with a policy a person sets: (rule, level) pairs and a blocking level."""
    problems = []
    if len(rules) > POLICY_RULES_MAX:
        problems.append(
            Problem(
                ErrorCode.INVALID_INPUT,
                f"a policy sets at most {POLICY_RULES_MAX} rules",
                (*field, "rules"),
                limit=POLICY_RULES_MAX,
            )
        )
    seen: set[str] = set()
    for index, (rule, level) in enumerate(rules):
        if not rule.strip() or len(rule) > RULE_NAME_MAX_LENGTH:
            problems.append(
                Problem(
                    ErrorCode.INVALID_INPUT,
                    f"a rule name is 1 to {RULE_NAME_MAX_LENGTH} characters",
                    (*field, "rules", index, "rule"),
                    limit=RULE_NAME_MAX_LENGTH,
                )
            )
        elif rule in seen:
            problems.append(
                Problem(
                    ErrorCode.INVALID_INPUT,
                    f"the rule {rule} is given more than once",
                    (*field, "rules", index, "rule"),
                )
            )
        if level is not None and level not in LEVEL_NAMES:
            problems.append(
                Problem(ErrorCode.INVALID_INPUT, "unknown level", (*field, "rules", index, "level"))
            )
        seen.add(rule)
    if blocking is not None and blocking not in LEVEL_NAMES:
        problems.append(Problem(ErrorCode.INVALID_INPUT, "unknown level", (*field, "blocking")))
    return problems


def override_refusal(
    principal: Principal, facts: CheckFacts, status: TaskStatus, field: FieldPath
) -> ConveyorError | None:
    """Why `principal` may not override the task's failed checks now, or None if they may.

    Only a DBA (or an ADMIN) may: the checks stand for the review a DBA would make."""
    if principal.role not in (Role.ADMIN, Role.DBA):
        return forbidden(f"the {principal.role.value} role may not override checks", field)
    if status not in (TaskStatus.PENDING_APPROVAL, TaskStatus.PENDING, TaskStatus.FAILED):
        return conflict(f"a {status.value} task's checks cannot be overridden", field)
    gate = facts.gate
    if gate is CheckGate.PENDING:
        return conflict("the task's checks have not finished yet", field)
    if gate is CheckGate.PASSED:
        return conflict("the task's checks found nothing blocking: nothing to override", field)
    if gate is CheckGate.OVERRIDDEN:
        return conflict("the task's checks are overridden already", field)
    return None


def override_reason_problems(reason: str, field: FieldPath) -> list[Problem]:
    if not reason.strip():
        return [Problem(ErrorCode.INVALID_INPUT, "an override needs a reason", field)]
    if len(reason) > OVERRIDE_REASON_MAX_LENGTH:
        return [
            Problem(
                ErrorCode.INVALID_INPUT,
                f"the reason must be at most {OVERRIDE_REASON_MAX_LENGTH} characters",
                field,
                limit=OVERRIDE_REASON_MAX_LENGTH,
            )
        ]
    return []


@dataclass(frozen=True)
class CheckSummary:
    """Findings counted per level, and the tasks the checks hold back or have not finished."""

    errors: int
    warnings: int
    notices: int
    blocked_task_ids: tuple[int, ...]
    pending_task_ids: tuple[int, ...]


def summarize(
    levels_by_task: Mapping[int, Sequence[str]], facts_by_task: Mapping[int, CheckFacts]
) -> CheckSummary:
    """The roll-up of a pipeline's or a stage's tasks (levels are the findings' level names)."""
    counts = {level: 0 for level in LEVEL_NAMES}
    for levels in levels_by_task.values():
        for level in levels:
            counts[level] += 1
    return CheckSummary(
        errors=counts[CheckLevel.ERROR.value],
        warnings=counts[CheckLevel.WARNING.value],
        notices=counts[CheckLevel.NOTICE.value],
        blocked_task_ids=tuple(
            sorted(task for task, facts in facts_by_task.items() if facts.gate is CheckGate.FAILED)
        ),
        pending_task_ids=tuple(
            sorted(task for task, facts in facts_by_task.items() if facts.gate is CheckGate.PENDING)
        ),
    )
