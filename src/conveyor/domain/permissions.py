"""Who may do what: roles, the actor behind a request, and every permission decision, pure."""

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from conveyor.domain.transitions import TaskAction
from conveyor.errors import FieldPath, forbidden


class Role(StrEnum):
    """What a token may do, in the spirit of Bytebase's workspace roles."""

    #: Everything, including API tokens.
    ADMIN = "ADMIN"
    #: Approve anywhere; manage environments, instances and databases; act on any issue.
    DBA = "DBA"
    #: Open issues and act on their own; approve only where the environment allows developers.
    DEVELOPER = "DEVELOPER"
    #: Read and subscribe, nothing else.
    VIEWER = "VIEWER"

    @property
    def acts_on_any_issue(self) -> bool:
        return self in (Role.ADMIN, Role.DBA)


class Operation(StrEnum):
    """What a role allows, whatever the issue or environment."""

    READ = "READ"
    MANAGE_TOKENS = "MANAGE_TOKENS"
    MANAGE_CATALOG = "MANAGE_CATALOG"
    CREATE_ISSUE = "CREATE_ISSUE"

    @property
    def described(self) -> str:
        return _OPERATION_PHRASES[self]


_OPERATION_PHRASES = {
    Operation.READ: "read",
    Operation.MANAGE_TOKENS: "manage API tokens",
    Operation.MANAGE_CATALOG: "manage environments, instances and databases",
    Operation.CREATE_ISSUE: "open issues",
}

_ROLE_OPERATIONS: dict[Role, frozenset[Operation]] = {
    Role.ADMIN: frozenset(Operation),
    Role.DBA: frozenset({Operation.READ, Operation.MANAGE_CATALOG, Operation.CREATE_ISSUE}),
    Role.DEVELOPER: frozenset({Operation.READ, Operation.CREATE_ISSUE}),
    Role.VIEWER: frozenset({Operation.READ}),
}


@dataclass(frozen=True)
class Principal:
    """Who is acting: the name recorded on everything they do, their role, their token."""

    actor: str
    role: Role
    #: None for Conveyor itself and for the command line, which act without a token.
    token_id: int | None = None
    expires_at: datetime | None = None

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at


class _EnvironmentRow(Protocol):
    @property
    def developers_may_approve(self) -> bool: ...
    @property
    def creator_may_approve(self) -> bool: ...


@dataclass(frozen=True)
class ApprovalRules:
    """An environment's policy on who may approve its tasks."""

    #: DEVELOPER tokens may approve here (ADMIN and DBA always may).
    developers_may_approve: bool
    #: The issue's creator may approve its own tasks here, whatever their role.
    creator_may_approve: bool

    @classmethod
    def of(cls, environment: _EnvironmentRow) -> "ApprovalRules":
        return cls(
            developers_may_approve=environment.developers_may_approve,
            creator_may_approve=environment.creator_may_approve,
        )


def operation_refusal(principal: Principal, operation: Operation) -> str | None:
    """Why `principal` may not perform `operation`, or None if they may."""
    if operation in _ROLE_OPERATIONS[principal.role]:
        return None
    return f"the {principal.role.value} role may not {operation.described}"


def issue_action_refusal(principal: Principal, issue_creator: str) -> str | None:
    """Why `principal` may not cancel, reopen or change the tasks of an issue, or None."""
    if principal.role.acts_on_any_issue:
        return None
    if principal.role is Role.DEVELOPER and principal.actor == issue_creator:
        return None
    if principal.role is Role.DEVELOPER:
        return "a DEVELOPER may only act on the issues they opened"
    return f"the {principal.role.value} role may not change issues"


def approval_refusal(principal: Principal, issue_creator: str, rules: ApprovalRules) -> str | None:
    """Why `principal` may not approve a task of this issue in an environment with `rules`."""
    if principal.role is Role.VIEWER:
        return "the VIEWER role may not approve tasks"
    if principal.role is Role.DEVELOPER and not rules.developers_may_approve:
        return "this environment does not let a DEVELOPER approve its tasks"
    if not rules.creator_may_approve and principal.actor == issue_creator:
        return "in this environment the issue's creator may not approve its own tasks"
    return None


def task_action_refusal(
    principal: Principal, action: TaskAction, issue_creator: str, rules: ApprovalRules
) -> str | None:
    """Why `principal` may not take `action` on a task of this issue and environment."""
    if action.performed_by_runner:
        return f"only Conveyor's runner may {action.verb_phrase} a task"
    if action is TaskAction.APPROVE:
        return approval_refusal(principal, issue_creator, rules)
    return issue_action_refusal(principal, issue_creator)


def require(principal: Principal, operation: Operation) -> None:
    """Raise FORBIDDEN unless `principal`'s role allows `operation`."""
    refuse_if(operation_refusal(principal, operation))


def refuse_if(refusal: str | None, field: FieldPath | None = None) -> None:
    """Raise FORBIDDEN for a refusal, if there is one."""
    if refusal is not None:
        raise forbidden(refusal, field)


#: Conveyor itself and its command line, which act without a token, as ADMIN.
SYSTEM = Principal(actor="conveyor", role=Role.ADMIN)
