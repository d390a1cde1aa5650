"""What check results mean for a task: its gate, who may override, a policy's levels."""

import pytest

from conveyor.domain.check_review import (
    CheckFacts,
    CheckGate,
    blocking_rules,
    environment_review_policy,
    linter_could_block,
    override_refusal,
    policy_problems,
    summarize,
)
from conveyor.domain.checks import CheckLevel, Finding, ReviewPolicy, weigh
from conveyor.domain.permissions import Principal, Role
from conveyor.domain.statuses import ApprovalPolicy, TaskStatus
from conveyor.errors import ErrorCode

FIELD = ("input", "taskId")


def facts(
    checked: int | None = 2, rules: tuple[str, ...] = ("truncate",), overridden: int | None = None
) -> CheckFacts:
    return CheckFacts(
        statement_version=2,
        checked_version=checked,
        blocking_rules=rules,
        overridden_version=overridden,
    )


def finding(rule: str, level: CheckLevel) -> Finding:
    return Finding(rule, level, "m", "s", 1, 1, None)


@pytest.mark.parametrize(
    ("checks", "gate", "holding"),
    [
        (facts(checked=None), CheckGate.PENDING, ()),
        # Checks of an older statement do not count: the new one is not checked yet.
        (facts(checked=1), CheckGate.PENDING, ()),
        (facts(rules=()), CheckGate.PASSED, ()),
        (facts(), CheckGate.FAILED, ("truncate",)),
        (facts(overridden=2), CheckGate.OVERRIDDEN, ()),
        # An override of an older statement was dismissed by the edit.
        (facts(overridden=1), CheckGate.FAILED, ("truncate",)),
    ],
)
def test_a_task_s_gate(checks: CheckFacts, gate: CheckGate, holding: tuple[str, ...]) -> None:
    assert (checks.gate, checks.holding_rules) == (gate, holding)


@pytest.mark.parametrize(
    ("role", "checks", "status", "code"),
    [
        (Role.DBA, facts(), TaskStatus.PENDING_APPROVAL, None),
        (Role.ADMIN, facts(), TaskStatus.FAILED, None),
        (Role.DEVELOPER, facts(), TaskStatus.PENDING, ErrorCode.FORBIDDEN),
        (Role.VIEWER, facts(), TaskStatus.PENDING, ErrorCode.FORBIDDEN),
        (Role.DBA, facts(), TaskStatus.DONE, ErrorCode.CONFLICT),
        (Role.DBA, facts(checked=None), TaskStatus.PENDING, ErrorCode.CONFLICT),
        (Role.DBA, facts(rules=()), TaskStatus.PENDING, ErrorCode.CONFLICT),
        (Role.DBA, facts(overridden=2), TaskStatus.PENDING, ErrorCode.CONFLICT),
    ],
)
def test_who_may_override_which_checks(
    role: Role, checks: CheckFacts, status: TaskStatus, code: ErrorCode | None
) -> None:
    refused = override_refusal(Principal("p", role), checks, status, FIELD)

    assert (None if refused is None else refused.first.code) == code
    if refused is not None:
        assert refused.first.field == FIELD


def test_an_environment_s_policy_is_its_kind_s_defaults_with_its_own_levels_on_top() -> None:
    protected = environment_review_policy(ApprovalPolicy.MANUAL, {}, None)
    relaxed = environment_review_policy(
        ApprovalPolicy.MANUAL, {"truncate": "WARNING", "prefer-identity": None}, "WARNING"
    )
    unprotected = environment_review_policy(ApprovalPolicy.AUTOMATIC, {}, None)

    assert (protected.levels["truncate"], protected.blocking) == (
        CheckLevel.ERROR,
        CheckLevel.ERROR,
    )
    assert unprotected.levels["truncate"] is CheckLevel.WARNING
    assert relaxed.levels["truncate"] is CheckLevel.WARNING
    assert relaxed.levels["prefer-identity"] is None
    assert relaxed.blocking is CheckLevel.WARNING
    assert relaxed.levels["syntax"] is CheckLevel.ERROR


def test_findings_are_weighed_by_the_policy_and_block_from_its_level() -> None:
    policy = environment_review_policy(
        ApprovalPolicy.AUTOMATIC, {"target-connection": "ERROR", "target-privilege": None}, None
    )
    found = weigh(
        [
            finding("target-connection", CheckLevel.WARNING),
            finding("target-privilege", CheckLevel.ERROR),
            finding("target-database-missing", CheckLevel.ERROR),
        ],
        policy,
    )

    assert [(f.rule, f.level) for f in found] == [
        ("target-connection", CheckLevel.ERROR),
        ("target-database-missing", CheckLevel.ERROR),
    ]
    assert blocking_rules([*found, found[0]], policy) == (
        "target-connection",
        "target-database-missing",
    )
    assert blocking_rules([finding("x", CheckLevel.WARNING)], policy) == ()


def test_a_policy_s_bad_input_is_named_by_its_field() -> None:
    problems = policy_problems(
        [("truncate", "WARNING"), ("", None), ("truncate", None), ("syntax", "LOUD")],
        "SEVERE",
        ("input",),
    )

    assert [(p.field, p.message) for p in problems] == [
        (("input", "rules", 1, "rule"), "a rule name is 1 to 100 characters"),
        (("input", "rules", 2, "rule"), "the rule truncate is given more than once"),
        (("input", "rules", 3, "level"), "unknown level"),
        (("input", "blocking"), "unknown level"),
    ]
    assert policy_problems([("truncate", None)], "NOTICE", ("input",)) == []


def test_a_summary_counts_levels_and_names_blocked_and_pending_tasks() -> None:
    summary = summarize(
        {1: ["ERROR", "NOTICE"], 2: ["WARNING"], 3: []},
        {1: facts(), 2: facts(rules=()), 3: facts(checked=None)},
    )

    assert (summary.errors, summary.warnings, summary.notices) == (1, 1, 1)
    assert (summary.blocked_task_ids, summary.pending_task_ids) == ((1,), (3,))


def _open(levels: dict[str, str | None], blocking: str | None) -> ReviewPolicy:
    """The policy of an environment without approvals, with `levels` and `blocking`."""
    return environment_review_policy(ApprovalPolicy.AUTOMATIC, levels, blocking)


@pytest.mark.parametrize(
    ("policy", "could_block"),
    [
        # Default policies: squawk's own levels are at most WARNING outside its syntax-error
        # (off); only a protected environment's data-loss rules of squawk's are errors.
        (_open({}, None), False),
        (environment_review_policy(ApprovalPolicy.MANUAL, {}, None), True),
        # Blocking from WARNING: any rule squawk reports at its own level would block.
        (_open({}, "WARNING"), True),
        # One squawk rule raised to ERROR.
        (_open({"renaming-column": "ERROR"}, None), True),
        # squawk's syntax-error turned back on: squawk reports it as an error.
        (_open({"syntax-error": "ERROR"}, None), True),
        # A name that is not one of Conveyor's own rules may be squawk's (or its absence).
        (_open({"linter-unavailable": "ERROR"}, None), True),
        (_open({"some-new-rule": "ERROR"}, None), True),
        # Conveyor's own rules and the target's block without squawk: they do not make it block.
        (
            environment_review_policy(
                ApprovalPolicy.AUTOMATIC,
                {"truncate": "ERROR", "target-connection": "ERROR", "dry-run": "ERROR"},
                None,
            ),
            False,
        ),
        # A protected environment whose squawk data-loss rules are lowered.
        (
            environment_review_policy(
                ApprovalPolicy.MANUAL,
                dict.fromkeys(("ban-drop-column", "ban-drop-table", "ban-drop-schema"), "WARNING"),
                None,
            ),
            False,
        ),
        # syntax-error unnamed (a policy built without the defaults): squawk's own ERROR.
        (ReviewPolicy({}, blocking=CheckLevel.ERROR), True),
        (ReviewPolicy({"syntax-error": None}, blocking=CheckLevel.ERROR), False),
    ],
)
def test_whether_squawk_s_findings_could_block_a_task_under_a_policy(
    policy: ReviewPolicy, could_block: bool
) -> None:
    assert linter_could_block(policy) is could_block
