"""The value sets of Conveyor's nouns: statuses, policies, task types."""

from enum import StrEnum


class TaskStatus(StrEnum):
    #: Waits for a person to approve it (its stage's environment is MANUAL).
    PENDING_APPROVAL = "PENDING_APPROVAL"
    #: May start as soon as scheduling allows.
    PENDING = "PENDING"
    #: A worker holds it and runs it against the target.
    RUNNING = "RUNNING"
    #: Ran and succeeded.
    DONE = "DONE"
    #: Ran and failed; holds the pipeline until retried or skipped.
    FAILED = "FAILED"
    #: Stopped by a person; holds the pipeline until retried.
    CANCELED = "CANCELED"
    #: Passed over by a person, with a reason.
    SKIPPED = "SKIPPED"


#: Statuses that let the pipeline move past a task.
FINISHED_TASK_STATUSES = frozenset({TaskStatus.DONE, TaskStatus.SKIPPED})


class StageStatus(StrEnum):
    RUNNING = "RUNNING"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    PENDING_APPROVAL = "PENDING_APPROVAL"
    PENDING = "PENDING"
    SKIPPED = "SKIPPED"
    DONE = "DONE"


class PipelineStatus(StrEnum):
    """The status of a pipeline, and so of its issue (the two map 1-to-1)."""

    #: Work remains.
    OPEN = "OPEN"
    #: Every task is DONE or SKIPPED.
    DONE = "DONE"
    #: A person canceled the issue; it can be reopened.
    CANCELED = "CANCELED"


class ApprovalPolicy(StrEnum):
    #: Tasks start as soon as scheduling allows.
    AUTOMATIC = "AUTOMATIC"
    #: Tasks wait for a person to approve them.
    MANUAL = "MANUAL"


class Engine(StrEnum):
    POSTGRES = "POSTGRES"


class TaskType(StrEnum):
    DATABASE_CREATE = "DATABASE_CREATE"
    SCHEMA_UPDATE = "SCHEMA_UPDATE"
    DATA_UPDATE = "DATA_UPDATE"
    INSTANCE_SYNC = "INSTANCE_SYNC"

    @property
    def described(self) -> str:
        """The type as a person reads it in a sentence: "an INSTANCE_SYNC task"."""
        article = "an" if self.value[0] in "AEIOU" else "a"
        return f"{article} {self.value} task"

    @property
    def needs_database(self) -> bool:
        """Whether the task runs against one existing Database (else the whole instance)."""
        return self in (TaskType.SCHEMA_UPDATE, TaskType.DATA_UPDATE)

    @property
    def needs_statement(self) -> bool:
        return self in (TaskType.SCHEMA_UPDATE, TaskType.DATA_UPDATE)

    @property
    def needs_database_name(self) -> bool:
        return self is TaskType.DATABASE_CREATE


class TaskRunStatus(StrEnum):
    RUNNING = "RUNNING"
    DONE = "DONE"
    FAILED = "FAILED"
    CANCELED = "CANCELED"


class EventKind(StrEnum):
    ISSUE_CREATED = "ISSUE_CREATED"
    PIPELINE_STATUS_CHANGED = "PIPELINE_STATUS_CHANGED"
    TASK_STATUS_CHANGED = "TASK_STATUS_CHANGED"
    TASK_APPROVED = "TASK_APPROVED"
    TASK_EDITED = "TASK_EDITED"
    TASK_CANCEL_REQUESTED = "TASK_CANCEL_REQUESTED"
    #: A stage's derived status changed with its tasks' (written with the task's change).
    STAGE_STATUS_CHANGED = "STAGE_STATUS_CHANGED"
    #: A running task's log lines (statements started and finished, server notices), a batch
    #: at a time.
    TASK_LOG = "TASK_LOG"
    #: A task's checks finished for a statement version (counts per level, blocking rules).
    TASK_CHECKED = "TASK_CHECKED"
    #: A DBA let a task run despite its failed checks, for a reason.
    TASK_CHECKS_OVERRIDDEN = "TASK_CHECKS_OVERRIDDEN"
    #: A dry run of a task was asked for (by a person) or finished (by a worker: its outcome).
    TASK_DRY_RUN_REQUESTED = "TASK_DRY_RUN_REQUESTED"
    TASK_DRY_RUN_FINISHED = "TASK_DRY_RUN_FINISHED"
