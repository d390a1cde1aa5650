"""Who may do what, as tables written out in full: each cell is a decision of the policy, not
a rule re-derived by the test."""

from datetime import UTC, datetime, timedelta

import pytest

from conveyor.domain.permissions import (
    SYSTEM,
    ApprovalRules,
    Operation,
    Principal,
    Role,
    approval_refusal,
    issue_action_refusal,
    operation_refusal,
    task_action_refusal,
)
from conveyor.domain.transitions import TaskAction

Y, N = True, False
ADMIN, DBA, DEVELOPER, VIEWER = Role.ADMIN, Role.DBA, Role.DEVELOPER, Role.VIEWER
#: Who opened the issue in every case below.
CREATOR = "dora"

OPERATIONS = (
    Operation.READ,
    Operation.MANAGE_TOKENS,
    Operation.MANAGE_CATALOG,
    Operation.CREATE_ISSUE,
)

# fmt: off
OPERATION_TABLE: dict[Role, tuple[bool, ...]] = {
    #           READ  MANAGE_TOKENS  MANAGE_CATALOG  CREATE_ISSUE
    ADMIN:     (Y,    Y,             Y,              Y),
    DBA:       (Y,    N,             Y,              Y),
    DEVELOPER: (Y,    N,             N,              Y),
    VIEWER:    (Y,    N,             N,              N),
}
# fmt: on

PERSON_ACTIONS = (
    TaskAction.APPROVE,
    TaskAction.CANCEL,
    TaskAction.RETRY,
    TaskAction.SKIP,
    TaskAction.EDIT,
    TaskAction.RUN_NOW,
)
RUNNER_ACTIONS = (
    TaskAction.START,
    TaskAction.SUCCEED,
    TaskAction.FAIL,
    TaskAction.ABORT,
    TaskAction.RELEASE,
)

# Each row: the principal's role, whether they opened the issue, the environment's
# developersMayApprove and creatorMayApprove; then whether each action is allowed.
# fmt: off
TASK_ACTION_TABLE: list[tuple[Role, bool, bool, bool, tuple[bool, ...]]] = [
    # role     creator devs creator_may  APPROVE CANCEL RETRY SKIP EDIT RUN_NOW
    (ADMIN,     N,     N,   N,          (Y,      Y,     Y,    Y,   Y,   Y)),
    (ADMIN,     N,     N,   Y,          (Y,      Y,     Y,    Y,   Y,   Y)),
    (ADMIN,     N,     Y,   N,          (Y,      Y,     Y,    Y,   Y,   Y)),
    (ADMIN,     N,     Y,   Y,          (Y,      Y,     Y,    Y,   Y,   Y)),
    (ADMIN,     Y,     N,   N,          (N,      Y,     Y,    Y,   Y,   Y)),
    (ADMIN,     Y,     N,   Y,          (Y,      Y,     Y,    Y,   Y,   Y)),
    (ADMIN,     Y,     Y,   N,          (N,      Y,     Y,    Y,   Y,   Y)),
    (ADMIN,     Y,     Y,   Y,          (Y,      Y,     Y,    Y,   Y,   Y)),
    (DBA,       N,     N,   N,          (Y,      Y,     Y,    Y,   Y,   Y)),
    (DBA,       N,     N,   Y,          (Y,      Y,     Y,    Y,   Y,   Y)),
    (DBA,       N,     Y,   N,          (Y,      Y,     Y,    Y,   Y,   Y)),
    (DBA,       N,     Y,   Y,          (Y,      Y,     Y,    Y,   Y,   Y)),
    (DBA,       Y,     N,   N,          (N,      Y,     Y,    Y,   Y,   Y)),
    (DBA,       Y,     N,   Y,          (Y,      Y,     Y,    Y,   Y,   Y)),
    (DBA,       Y,     Y,   N,          (N,      Y,     Y,    Y,   Y,   Y)),
    (DBA,       Y,     Y,   Y,          (Y,      Y,     Y,    Y,   Y,   Y)),
    (DEVELOPER, N,     N,   N,          (N,      N,     N,    N,   N,   N)),
    (DEVELOPER, N,     N,   Y,          (N,      N,     N,    N,   N,   N)),
    (DEVELOPER, N,     Y,   N,          (Y,      N,     N,    N,   N,   N)),
    (DEVELOPER, N,     Y,   Y,          (Y,      N,     N,    N,   N,   N)),
    (DEVELOPER, Y,     N,   N,          (N,      Y,     Y,    Y,   Y,   Y)),
    (DEVELOPER, Y,     N,   Y,          (N,      Y,     Y,    Y,   Y,   Y)),
    (DEVELOPER, Y,     Y,   N,          (N,      Y,     Y,    Y,   Y,   Y)),
    (DEVELOPER, Y,     Y,   Y,          (Y,      Y,     Y,    Y,   Y,   Y)),
    (VIEWER,    N,     N,   N,          (N,      N,     N,    N,   N,   N)),
    (VIEWER,    N,     N,   Y,          (N,      N,     N,    N,   N,   N)),
    (VIEWER,    N,     Y,   N,          (N,      N,     N,    N,   N,   N)),
    (VIEWER,    N,     Y,   Y,          (N,      N,     N,    N,   N,   N)),
    (VIEWER,    Y,     N,   N,          (N,      N,     N,    N,   N,   N)),
    (VIEWER,    Y,     N,   Y,          (N,      N,     N,    N,   N,   N)),
    (VIEWER,    Y,     Y,   N,          (N,      N,     N,    N,   N,   N)),
    (VIEWER,    Y,     Y,   Y,          (N,      N,     N,    N,   N,   N)),
]
# fmt: on

TASK_ACTION_CASES = [
    pytest.param(
        role,
        is_creator,
        ApprovalRules(developers_may_approve=devs, creator_may_approve=creator_may),
        action,
        allowed,
        id=f"{role.value}-{'creator' if is_creator else 'other'}-devs={devs}"
        f"-creator_may={creator_may}-{action.value}",
    )
    for role, is_creator, devs, creator_may, row in TASK_ACTION_TABLE
    for action, allowed in zip(PERSON_ACTIONS, row, strict=True)
]

ALL_RULES = [
    ApprovalRules(developers_may_approve=devs, creator_may_approve=creator_may)
    for devs in (N, Y)
    for creator_may in (N, Y)
]


def principal(role: Role, is_creator: bool) -> Principal:
    return Principal(actor=CREATOR if is_creator else "otto", role=role, token_id=7)


def test_the_tables_cover_every_role_operation_action_and_rule() -> None:
    assert set(OPERATION_TABLE) == set(Role)
    assert set(OPERATIONS) == set(Operation)
    assert set(PERSON_ACTIONS) | set(RUNNER_ACTIONS) == set(TaskAction)
    assert {row[:4] for row in TASK_ACTION_TABLE} == {
        (role, is_creator, devs, creator_may)
        for role in Role
        for is_creator in (N, Y)
        for devs in (N, Y)
        for creator_may in (N, Y)
    }
    assert len(TASK_ACTION_TABLE) == len(Role) * 2 * 4


@pytest.mark.parametrize(
    ("role", "operation", "allowed"),
    [
        (role, operation, allowed)
        for role, row in OPERATION_TABLE.items()
        for operation, allowed in zip(OPERATIONS, row, strict=True)
    ],
)
def test_a_role_allows_exactly_the_operations_of_the_table(
    role: Role, operation: Operation, allowed: bool
) -> None:
    refusal = operation_refusal(Principal(actor="otto", role=role), operation)

    assert (refusal is None) is allowed, refusal


@pytest.mark.parametrize(("role", "is_creator", "rules", "action", "allowed"), TASK_ACTION_CASES)
def test_a_task_action_is_allowed_exactly_as_the_table_says(
    role: Role, is_creator: bool, rules: ApprovalRules, action: TaskAction, allowed: bool
) -> None:
    refusal = task_action_refusal(principal(role, is_creator), action, CREATOR, rules)

    assert (refusal is None) is allowed, refusal


@pytest.mark.parametrize(("role", "is_creator", "rules", "action", "allowed"), TASK_ACTION_CASES)
def test_the_refusals_behind_task_actions_agree_with_the_table(
    role: Role, is_creator: bool, rules: ApprovalRules, action: TaskAction, allowed: bool
) -> None:
    # approveStage asks approval_refusal, cancelIssue and reopenIssue ask issue_action_refusal:
    # each must decide as the task action it stands for.
    who = principal(role, is_creator)
    if action is TaskAction.APPROVE:
        refusal = approval_refusal(who, CREATOR, rules)
    else:
        refusal = issue_action_refusal(who, CREATOR)

    assert (refusal is None) is allowed, refusal


@pytest.mark.parametrize("rules", ALL_RULES)
@pytest.mark.parametrize("is_creator", [N, Y])
@pytest.mark.parametrize("action", RUNNER_ACTIONS)
@pytest.mark.parametrize("who", [*(Principal(actor=CREATOR, role=role) for role in Role), SYSTEM])
def test_the_runners_actions_are_refused_to_everyone(
    who: Principal, action: TaskAction, is_creator: bool, rules: ApprovalRules
) -> None:
    creator = who.actor if is_creator else "someone else"

    refusal = task_action_refusal(who, action, creator, rules)

    assert refusal == f"only Conveyor's runner may {action.verb_phrase} a task"


@pytest.mark.parametrize(
    ("refusal", "message"),
    [
        (
            operation_refusal(Principal("otto", VIEWER), Operation.CREATE_ISSUE),
            "the VIEWER role may not open issues",
        ),
        (
            operation_refusal(Principal("otto", DEVELOPER), Operation.MANAGE_CATALOG),
            "the DEVELOPER role may not manage environments, instances and databases",
        ),
        (
            operation_refusal(Principal("otto", DBA), Operation.MANAGE_TOKENS),
            "the DBA role may not manage API tokens",
        ),
        (
            issue_action_refusal(Principal("otto", DEVELOPER), CREATOR),
            "a DEVELOPER may only act on the issues they opened",
        ),
        (
            issue_action_refusal(Principal(CREATOR, VIEWER), CREATOR),
            "the VIEWER role may not change issues",
        ),
        (
            approval_refusal(Principal(CREATOR, VIEWER), CREATOR, ApprovalRules(Y, Y)),
            "the VIEWER role may not approve tasks",
        ),
        (
            approval_refusal(Principal(CREATOR, DEVELOPER), CREATOR, ApprovalRules(N, Y)),
            "this environment does not let a DEVELOPER approve its tasks",
        ),
        (
            approval_refusal(Principal(CREATOR, ADMIN), CREATOR, ApprovalRules(Y, N)),
            "in this environment the issue's creator may not approve its own tasks",
        ),
        (
            task_action_refusal(
                Principal("otto", ADMIN), TaskAction.SUCCEED, CREATOR, ALL_RULES[0]
            ),
            "only Conveyor's runner may mark as done a task",
        ),
    ],
)
def test_each_reason_for_a_refusal_reads_as_a_sentence(refusal: str | None, message: str) -> None:
    assert refusal == message


def every_refusal() -> list[str]:
    refusals = [
        operation_refusal(Principal("otto", role), operation)
        for role in Role
        for operation in Operation
    ] + [
        task_action_refusal(principal(role, is_creator), action, CREATOR, rules)
        for role in Role
        for is_creator in (N, Y)
        for action in TaskAction
        for rules in ALL_RULES
    ]
    return sorted({refusal for refusal in refusals if refusal is not None})


@pytest.mark.parametrize("refusal", every_refusal())
def test_no_refusal_shows_python_or_the_actors_name(refusal: str) -> None:
    # A client shows the message as it is: no enum reprs, no identifiers, no other person.
    assert refusal[0].islower()
    assert not any(marker in refusal for marker in ("Role.", "Operation.", "TaskAction.", "<"))
    assert "_" not in refusal
    assert CREATOR not in refusal
    assert "otto" not in refusal


@pytest.mark.parametrize(
    ("expires_at", "expired"),
    [
        (None, False),
        (datetime(2030, 1, 1, 12, tzinfo=UTC) + timedelta(seconds=1), False),
        (datetime(2030, 1, 1, 12, tzinfo=UTC), True),
        (datetime(2030, 1, 1, 12, tzinfo=UTC) - timedelta(seconds=1), True),
    ],
    ids=["never", "a-second-left", "at-expiry", "a-second-late"],
)
def test_a_principal_expires_at_its_tokens_expiry(
    expires_at: datetime | None, expired: bool
) -> None:
    now = datetime(2030, 1, 1, 12, tzinfo=UTC)

    assert Principal("otto", VIEWER, token_id=1, expires_at=expires_at).expired(now) is expired


def test_conveyor_itself_acts_as_admin_without_a_token() -> None:
    assert (SYSTEM.role, SYSTEM.token_id, SYSTEM.expires_at) == (ADMIN, None, None)
    assert all(operation_refusal(SYSTEM, operation) is None for operation in Operation)
