"""A worker's second job: checking tasks before they may run, and dry runs.

Checks are due when an issue is created and whenever a task's statement changes; the worker
holds a batch of due tasks by lease (one that dies leaves them to another worker once the lease
expires), runs the statement rules and squawk over the batch, asks each target once, and
records every task's findings in one transaction, which also tells subscribers.
"""

import asyncio
import contextlib
import functools
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from conveyor.db import checks
from conveyor.db.checks import CheckOutcome, TaskToCheck
from conveyor.db.issues import validated_plan
from conveyor.db.outages import Outage
from conveyor.domain.check_review import CheckSource, blocking_rules
from conveyor.domain.checks import CheckLevel, Finding, check_statement, weigh
from conveyor.domain.permissions import Principal
from conveyor.domain.plan import IssuePlan
from conveyor.domain.statuses import TaskType
from conveyor.runner import probes, squawk
from conveyor.runner.probes import Probe
from conveyor.runner.reach import Reach
from conveyor.runner.sessions import TargetSessions
from conveyor.settings import Settings

logger = logging.getLogger(__name__)

#: Tasks checked in one round (one squawk run, one transaction recording them).
CHECK_BATCH = 500
#: Dry runs one worker runs at once.
DRY_RUN_BATCH = 4
#: Targets asked at once during a round.
TARGETS_AT_ONCE = 8
LINTER_UNAVAILABLE = "linter-unavailable"
#: Sessions the checks keep open on one instance.
SESSIONS_PER_INSTANCE = TARGETS_AT_ONCE


class Checker:
    def __init__(
        self,
        settings: Settings,
        reach: Reach,
        outage: Outage,
    ) -> None:
        self._settings = settings
        self._reach = reach
        self._outage = outage
        self._lease = timedelta(seconds=settings.lease_seconds)
        # Sessions of their own, kept between rounds (opening one costs more than the checks
        # it serves), apart from the runner's: checks never take a running task's slot.
        self._sessions = TargetSessions()

    async def close(self) -> None:
        """Close the sessions kept open on targets."""
        await self._sessions.close()

    async def run(self, wakeup: asyncio.Event, stopping: asyncio.Event) -> None:
        """Check and dry-run what is due, whenever woken (and every poll), until `stopping`."""
        while not stopping.is_set():
            wakeup.clear()
            try:
                busy = await self.check_round() + await self.dry_run_round()
            except Exception as error:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), self._outage.failed(error))
                continue
            self._outage.succeeded()
            if busy:
                continue
            waits = [asyncio.create_task(wakeup.wait()), asyncio.create_task(stopping.wait())]
            await asyncio.wait(
                waits, timeout=self._settings.poll_seconds, return_when=asyncio.FIRST_COMPLETED
            )
            for wait in waits:
                wait.cancel()

    async def check_round(self) -> int:
        """Check one batch of due tasks; how many were checked."""
        held = await checks.claim_tasks_to_check(self._lease, CHECK_BATCH)
        if not held:
            return 0
        statement_findings = await self._statement_findings(held)
        target_findings = await self._target_findings(held)
        outcomes = []
        for task, from_statement, from_target in zip(
            held, statement_findings, target_findings, strict=True
        ):
            weighed_target = weigh(from_target, task.policy)
            found = [
                *((CheckSource.STATEMENT, finding) for finding in from_statement),
                *((CheckSource.TARGET, finding) for finding in weighed_target),
            ]
            outcomes.append(
                CheckOutcome(
                    task.task_id,
                    task.statement_version,
                    found,
                    blocking_rules([finding for _, finding in found], task.policy),
                )
            )
        await checks.record_checks(outcomes)
        return len(held)

    async def _statement_findings(self, held: Sequence[TaskToCheck]) -> list[tuple[Finding, ...]]:
        scripts = [task.statement for task in held if task.statement is not None]
        unavailable: Finding | None = None
        try:
            linted = iter(await squawk.lint_many(scripts)) if scripts else iter(())
        except squawk.SquawkUnavailable as error:
            logger.warning("checks run without squawk: %s", error)
            unavailable = Finding(
                LINTER_UNAVAILABLE,
                CheckLevel.NOTICE,
                f"squawk's rules were not run: {error}",
                None,
                None,
                None,
                f"README.md#{LINTER_UNAVAILABLE}",
            )
            linted = iter(() for _ in scripts)

        def weigh_all() -> list[tuple[Finding, ...]]:
            found: list[tuple[Finding, ...]] = []
            for task in held:
                if task.statement is None:
                    found.append(())
                    continue
                own = check_statement(task.statement, task.type, task.policy, next(linted))
                found.append(own if unavailable is None else (*own, unavailable))
            return found

        # Parsing a large batch takes a while: off the event loop, which serves the API too.
        return await asyncio.to_thread(weigh_all)

    async def _target_findings(self, held: Sequence[TaskToCheck]) -> list[list[Finding]]:
        by_target: dict[tuple[int, str | None], list[int]] = defaultdict(list)
        for index, task in enumerate(held):
            by_target[(task.instance_id, task.target_database)].append(index)
        found: list[list[Finding]] = [[] for _ in held]
        room = asyncio.Semaphore(TARGETS_AT_ONCE)

        async def ask(indexes: list[int]) -> None:
            async with room:
                first = held[indexes[0]]
                answers = await probes.target_findings(
                    self._reach.target(first),
                    [Probe(held[i].type, held[i].statement) for i in indexes],
                    functools.partial(
                        self._sessions.session,
                        first.instance_id,
                        SESSIONS_PER_INSTANCE,
                        reusable=lambda: True,
                    ),
                )
            for index, answer in zip(indexes, answers, strict=True):
                found[index] = answer

        await asyncio.gather(*(ask(indexes) for indexes in by_target.values()))
        return found

    async def dry_run_round(self) -> int:
        """Run one batch of asked-for dry runs; how many ran."""
        held = await checks.claim_dry_runs(self._lease, DRY_RUN_BATCH)
        await asyncio.gather(*(self._dry_run(task) for task in held))
        return len(held)

    async def _dry_run(self, task: TaskToCheck) -> None:
        assert task.statement is not None
        assert task.type in (TaskType.SCHEMA_UPDATE, TaskType.DATA_UPDATE)
        finding, detail = await probes.dry_run(
            self._reach.target(task),
            task.statement,
            statement_timeout_ms=self._settings.statement_timeout_ms,
            lock_timeout_ms=self._settings.lock_timeout_ms,
        )
        await checks.record_dry_run(task, [finding], detail)


@dataclass(frozen=True)
class PlannedTaskCheck:
    """The statement checks of one task of a plan, as its environment weighs them."""

    stage_position: int
    task_position: int
    ref: str | None
    findings: tuple[Finding, ...]
    blocking_rules: tuple[str, ...]


async def check_plan(principal: Principal, plan: IssuePlan) -> list[PlannedTaskCheck]:
    """What a plan's tasks would be told by the statement checks, writing nothing; a plan
    createIssue would refuse is refused the same way. (The target checks need the tasks'
    targets asked, which createIssue's workers do.)"""
    await validated_plan(principal, plan)
    policies = await checks.review_policies(
        stage.environment_id for stage in plan.stages if stage.environment_id is not None
    )
    planned = [
        (stage_position, task_position, task, policies[stage.environment_id or 0])
        for stage_position, stage in enumerate(plan.stages)
        for task_position, task in enumerate(stage.tasks)
    ]
    scripts = [task.statement for _, _, task, _ in planned if task.statement is not None]
    linted = iter(await squawk.lint_many(scripts) if scripts else [])

    def weigh_all() -> list[PlannedTaskCheck]:
        checked = []
        for stage_position, task_position, task, policy in planned:
            found = (
                check_statement(task.statement, task.type, policy, next(linted))
                if task.statement is not None
                else ()
            )
            checked.append(
                PlannedTaskCheck(
                    stage_position, task_position, task.ref, found, blocking_rules(found, policy)
                )
            )
        return checked

    return await asyncio.to_thread(weigh_all)
