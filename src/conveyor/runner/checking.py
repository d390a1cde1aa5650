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
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import timedelta

from conveyor.db import checks
from conveyor.db.checks import CheckOutcome, TaskToCheck
from conveyor.db.claims import ClaimedTask, ClaimFor
from conveyor.db.issues import validated_plan
from conveyor.db.outages import Outage
from conveyor.domain.check_review import CheckSource, blocking_rules, linter_could_block
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
#: Tasks checked in the first round after a wake-up: a large issue's first tasks start as
#: soon as they are checked, enough of them to fill a worker's slots, while the rest of the
#: issue is checked in full rounds.
FIRST_CHECK_BATCH = 32
#: Dry runs one worker runs at once.
DRY_RUN_BATCH = 4
#: Targets asked at once during a round.
TARGETS_AT_ONCE = 8
LINTER_UNAVAILABLE = "linter-unavailable"
#: Statements of a round under this many characters in all are checked on the event loop.
INLINE_CHECK_CHARACTERS = 2_000
#: Sessions the checks keep open on one instance.
SESSIONS_PER_INSTANCE = TARGETS_AT_ONCE


#: squawk's findings on each task of a round (in order), and the notice that it could not run.
_Linted = tuple[list[tuple[Finding, ...]], Finding | None]
#: The claim a check round's transaction may make now (None: none), the worker's slots for it
#: held until the context ends.
ClaimRoom = Callable[[], AbstractContextManager[ClaimFor | None]]


class Checker:
    def __init__(
        self,
        settings: Settings,
        reach: Reach,
        outage: Outage,
        claim_room: ClaimRoom | None = None,
        start_claimed: Callable[[list[ClaimedTask]], None] | None = None,
    ) -> None:
        """`claim_room` and `start_claimed`: the worker this checker serves, which runs the
        tasks a round's transaction claims once their checks let them start (without them,
        rounds only record checks)."""
        self._settings = settings
        self._reach = reach
        self._outage = outage
        self._claim_room = claim_room
        self._start_claimed = start_claimed
        self._lease = timedelta(seconds=settings.lease_seconds)
        # Sessions of their own, kept between rounds (opening one costs more than the checks
        # it serves), apart from the runner's: checks never take a running task's slot. The
        # probes only read the catalog, so a session goes back without a reset: a round trip
        # less on the way from a new issue to its first task's start.
        self._sessions = TargetSessions(reset_on_return=False)

    async def close(self) -> None:
        """Close the sessions kept open on targets."""
        await self._sessions.close()

    async def run(self, wakeup: asyncio.Event, stopping: asyncio.Event) -> None:
        """Check and dry-run what is due, whenever woken (and every poll), until `stopping`."""
        batch = FIRST_CHECK_BATCH
        while not stopping.is_set():
            wakeup.clear()
            try:
                checked = await self.check_round(batch)
                dry_runs = await self.dry_run_round()
            except Exception as error:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), self._outage.failed(error))
                continue
            self._outage.succeeded()
            # Only a full batch may have left due work behind: a smaller one held all there
            # was, and what comes due later notifies (the checks' own records do not: they go
            # on the channel of the workers' writes).
            if checked >= batch or dry_runs >= DRY_RUN_BATCH:
                batch = CHECK_BATCH
                continue
            batch = FIRST_CHECK_BATCH
            waits = [asyncio.create_task(wakeup.wait()), asyncio.create_task(stopping.wait())]
            await asyncio.wait(
                waits, timeout=self._settings.poll_seconds, return_when=asyncio.FIRST_COMPLETED
            )
            for wait in waits:
                wait.cancel()

    async def check_round(self, batch: int = CHECK_BATCH) -> int:
        """Check up to `batch` due tasks; how many were checked.

        Tasks whose policy lets no finding of squawk's block them (domain.check_review.
        linter_could_block) are recorded first, on Conveyor's own rules and the target's, so
        that they may start without waiting for squawk's process; squawk's findings on them
        follow as advisory. The others are recorded once squawk has run too."""
        held = await checks.claim_tasks_to_check(self._lease, batch)
        if not held:
            return 0
        gated: list[TaskToCheck] = []
        advisory: list[TaskToCheck] = []
        for task in held:
            (gated if linter_could_block(task.policy) else advisory).append(task)
        if not advisory:
            await self._check(gated, *await self._linted(gated))
            return len(held)
        # squawk runs meanwhile, one process over the whole batch, when gated tasks wait for
        # it; else it starts once the checks are recorded (and the tasks they let start are
        # claimed): its process is then no rival of theirs for the CPU.
        linting = asyncio.create_task(self._linted(held)) if gated else None
        try:
            recorded = await self._check(advisory, [() for _ in advisory], None)
            lint_findings, unavailable = await (linting or self._linted(held))
        finally:
            if linting is not None:
                linting.cancel()
        by_task = dict(zip((task.task_id for task in held), lint_findings, strict=True))
        if gated:
            await self._check(gated, [by_task[task.task_id] for task in gated], unavailable)
        await self._record_advisory(advisory, recorded, by_task, unavailable)
        return len(held)

    async def _check(
        self,
        held: Sequence[TaskToCheck],
        lint_findings: Sequence[tuple[Finding, ...]],
        unavailable: Finding | None,
    ) -> list[CheckOutcome]:
        """Record `held`'s checks, with squawk's findings on each (`unavailable`: the notice
        that squawk could not run)."""
        statement_findings = await self._statement_findings(held, lint_findings, unavailable)
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
        if self._claim_room is None or self._start_claimed is None:
            await checks.record_checks(outcomes)
            return outcomes
        # The tasks whose checks let them start are claimed in the transaction that records
        # the checks, which holds their pipelines locked already: no second transaction, nor
        # a claim round woken by this one's commit to lock the pipeline again.
        with self._claim_room() as claim:
            self._start_claimed(await checks.record_checks(outcomes, claim))
        return outcomes

    async def _record_advisory(
        self,
        held: Sequence[TaskToCheck],
        recorded: Sequence[CheckOutcome],
        lint_by_task: Mapping[int, tuple[Finding, ...]],
        unavailable: Finding | None,
    ) -> None:
        """Add squawk's findings (weighed by each task's policy) to checks recorded without
        them; the blocking rules stay those recorded."""
        added = []
        for task, outcome in zip(held, recorded, strict=True):
            found = weigh(lint_by_task[task.task_id], task.policy)
            if unavailable is not None:
                found = (*found, unavailable)
            if blocking_rules(found, task.policy):
                # linter_could_block said none could: a squawk that reports a level it did not.
                logger.warning("task %s: squawk's findings would block it", task.task_id)
            if found:
                added.append((outcome, [(CheckSource.STATEMENT, finding) for finding in found]))
        await checks.record_advisory_findings(added)

    async def _linted(self, held: Sequence[TaskToCheck]) -> "_Linted":
        """squawk's findings on each task's statement, and the notice that squawk could not be
        run (None when it ran)."""
        scripts = [task.statement for task in held if task.statement is not None]
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
            return [() for _ in held], unavailable
        return [() if task.statement is None else next(linted) for task in held], None

    async def _statement_findings(
        self,
        held: Sequence[TaskToCheck],
        lint_findings: Iterable[tuple[Finding, ...]],
        unavailable: Finding | None,
    ) -> list[tuple[Finding, ...]]:
        linted = iter(lint_findings)

        def weigh_all() -> list[tuple[Finding, ...]]:
            found: list[tuple[Finding, ...]] = []
            for task in held:
                from_linter = next(linted)
                if task.statement is None:
                    found.append(())
                    continue
                own = check_statement(task.statement, task.type, task.policy, from_linter)
                found.append(own if unavailable is None else (*own, unavailable))
            return found

        if sum(len(task.statement or "") for task in held) < INLINE_CHECK_CHARACTERS:
            # A few small statements parse in well under a millisecond: a thread's hand-off
            # would cost more than it spares the event loop.
            return weigh_all()
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
