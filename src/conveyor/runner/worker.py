"""A worker: claims runnable tasks, runs them against their targets, reports the outcomes.

Any number of workers may share one Conveyor database. Each holds a lease on the tasks it
runs and renews it by heartbeat; a worker that finds another's lease expired settles that
task from the target's own record of applied changes (see `db.claims.resolve_interrupted`).

An outage of Conveyor's database stops no loop of the worker: claims, heartbeats, recovery and
reports are retried with growing delays until the database is back, and the outage is logged
once. A report that cannot be written is retried until it is (the heartbeat keeps the lease
meanwhile); if the worker stops first, the lease expires and recovery settles the task.
"""

import asyncio
import contextlib
import functools
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from conveyor.crypto import PasswordCipher
from conveyor.db import claims
from conveyor.db.claims import ClaimedTask
from conveyor.db.installation import installation_id
from conveyor.db.outages import Outage, database_unavailable
from conveyor.db.own_database import conveyor_database
from conveyor.domain.attempts import AttemptEnd, Outcome, abandoned, ending
from conveyor.domain.targets import DatabaseIdentity, InstanceNetworks
from conveyor.events.listener import EventListener, running_listener
from conveyor.operations.metrics import Metrics
from conveyor.runner import targets
from conveyor.runner.checking import Checker
from conveyor.runner.reach import Reach
from conveyor.runner.sessions import TargetSessions
from conveyor.runner.targets import Change, Target
from conveyor.runner.task_log import TaskLogStream
from conveyor.settings import Settings

logger = logging.getLogger(__name__)

#: How long a target may take to acknowledge a cancel before the worker gives up waiting.
CANCEL_WAIT_SECONDS = 10.0
CANCEL_RETRY_SECONDS = 0.25
#: How soon a worker claims again after a round that skipped another worker's locks.
CONTENDED_RETRY_SECONDS = 0.02
#: The least time between two lease renewals a notification asks for (to see a cancel
#: request): people's changes notify, and at hundreds a second a renewal each would be a
#: round trip per change.
WAKEUP_RENEWAL_SECONDS = 0.05


@dataclass
class _Attempt:
    claimed: ClaimedTask
    target: Target
    backend_pid: int | None = None
    canceled_by_person: bool = False
    interrupted_by_shutdown: bool = False
    #: A cancel went to the target: its session is not reused (it could hit the next task).
    cancel_sent: bool = False
    #: Set once the target finished: from then on only the report is left to do.
    outcome: Outcome | None = None
    #: The attempt's log entries its report writes (those not streamed while it ran).
    log_lines: list[dict[str, Any]] = field(default_factory=list)
    runner: asyncio.Task[None] | None = field(default=None, repr=False)


#: An attempt's report, and the future set once it is recorded.
_Report = tuple[claims.Finished, asyncio.Future[None]]


class Worker:
    def __init__(
        self,
        settings: Settings,
        cipher: PasswordCipher,
        listener: EventListener,
        conveyor_database: DatabaseIdentity,
        installation: uuid.UUID,
        metrics: Metrics | None = None,
    ) -> None:
        self.id = f"worker-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._settings = settings
        self._installation = installation
        # Parsed once: a mistyped network stops the worker at start, not at its first task.
        self._reach = Reach(
            cipher,
            conveyor_database,
            InstanceNetworks.parse(settings.instance_networks),
            settings.connect_timeout_seconds,
        )
        self._listener = listener
        self._lease = timedelta(seconds=settings.lease_seconds)
        self._attempts: dict[int, _Attempt] = {}
        self._stopping = asyncio.Event()
        self._room = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()
        #: Reports waiting to be recorded, by pipeline; the reporter of each that waits for
        #: its lock (it takes them once it holds it); every reporter under way.
        self._reports: dict[int, list[_Report]] = {}
        self._waiting_reporters: dict[int, asyncio.Task[None]] = {}
        self._reporters: set[asyncio.Task[None]] = set()
        self._outage = Outage(logger, self.id)
        self._sessions = TargetSessions()
        self._contended = False
        self._running = False
        #: The hot path's statements are prepared: the worker takes work at full speed.
        self._prepared = False
        #: A notification came since the last renewal: a cancel may have been asked for.
        self._renewal_wanted = False
        self._renewed_at = 0.0
        #: The process's metrics; the worker's own when it has none.
        self.metrics = metrics if metrics is not None else Metrics()
        self._task_logs = TaskLogStream(claims.RUNNER_ACTOR)
        #: Slots held for a claim in a check round's transaction, until its tasks are started.
        self._reserved = 0
        self._nothing_reserved = asyncio.Event()
        self._nothing_reserved.set()
        self._checker = Checker(
            settings,
            self._reach,
            Outage(logger, f"{self.id} checks"),
            claim_room=self._room_for_checked,
            start_claimed=self._start_attempts,
        )

    async def run(self) -> None:
        """Work until `stop` is called; then finish or hand back every task held."""
        logger.info("%s started (concurrency %d)", self.id, self._settings.worker_concurrency)
        wakeup = self._listener.subscribe()
        # A cancel request is a person's change: the runner's own transitions (every worker's,
        # two a task) never ask for one, so they do not make a renewal come due.
        cancel_wakeup = self._listener.subscribe(runner_transitions=False)
        # Checks come due by people's changes only (a new issue, an edited statement, a dry
        # run asked for): the runner's transitions, two a task, would each cost a round of
        # the checker's two claims for nothing.
        checks_wakeup = self._listener.subscribe(runner_transitions=False)
        self._running = True
        background = [
            asyncio.create_task(
                self._checker.run(checks_wakeup, self._stopping), name=f"{self.id}-checks"
            ),
            asyncio.create_task(self._heartbeat_loop(), name=f"{self.id}-heartbeat"),
            asyncio.create_task(self._recovery_loop(), name=f"{self.id}-recovery"),
            asyncio.create_task(self._task_logs.run(), name=f"{self.id}-task-logs"),
        ]
        look_for_work = True
        try:
            while not self._stopping.is_set():
                # The change that woke us may be a cancel request for a task we hold.
                self._renewal_wanted = self._renewal_wanted or cancel_wakeup.is_set()
                look_for_work = look_for_work or wakeup.is_set() or self._room.is_set()
                wakeup.clear()
                cancel_wakeup.clear()
                self._room.clear()
                try:
                    if not self._prepared:
                        # Ready before the first task: the pool's sessions open, the hot
                        # path's statements prepared on each.
                        await claims.prepare_hot_path(
                            self.id, self._lease, self._settings.db_pool_max_size
                        )
                        self._prepared = True
                    if self._renewal_wanted and (not self._attempts or self._renewal_wait() <= 0):
                        # Nothing held, nothing to renew: no later wake-up for it either.
                        self._renewal_wanted = False
                        await self._renew_leases()
                    if look_for_work:
                        await self._claim_while_room()
                        look_for_work = False
                except Exception as error:
                    # A claim either committed, and its tasks run, or did not; one whose
                    # commit was lost on the wire runs nowhere until recovery settles it.
                    await self._pause(self._outage.failed(error))
                    continue
                look_for_work = await self._wait_for_work(wakeup)
            # A check round's claim under way commits tasks this worker must run: they are
            # started before the drain waits for what runs.
            await self._nothing_reserved.wait()
            await self._drain()
        finally:
            self._running = False
            self._listener.unsubscribe(wakeup)
            self._listener.unsubscribe(checks_wakeup)
            self._listener.unsubscribe(cancel_wakeup)
            await self._sessions.close()
            stopped = [*background, *self._background, *self._reporters]
            for task in stopped:
                task.cancel()
            for task in stopped:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self._checker.close()
        logger.info("%s stopped", self.id)

    def stop(self) -> None:
        self._stopping.set()

    @property
    def claiming(self) -> bool:
        """Whether the worker looks for work: its loop runs, ready (its hot path prepared), it
        is not stopping, and its last try at Conveyor's database succeeded."""
        return (
            self._running
            and self._prepared
            and not self._stopping.is_set()
            and not self._outage.ongoing
        )

    @property
    def running_count(self) -> int:
        """Tasks running (each on a connection to its target) or reporting."""
        return len(self._attempts)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _wait_for_work(self, wakeup: asyncio.Event) -> bool:
        """Wait for a reason to claim, or for a renewal a notification asked for to come
        due; whether to look for work (False: only the renewal is due)."""
        waits = [
            asyncio.create_task(wakeup.wait()),
            asyncio.create_task(self._stopping.wait()),
            asyncio.create_task(self._room.wait()),
        ]
        # Notifications only wake the worker; the poll is the safety net for any it missed
        # and for not-before times coming due. A round that skipped what another worker held
        # looks again soon: the notification of that work may have come while it was held.
        work_timeout = CONTENDED_RETRY_SECONDS if self._contended else self._settings.poll_seconds
        timeout = work_timeout
        if self._renewal_wanted:
            timeout = min(timeout, self._renewal_wait())
        woken, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for wait in waits:
            wait.cancel()
        # A wake-up for the renewal alone claims nothing: the notification that asked for it
        # had its claim round already, and another round would only delay the next one.
        return bool(woken) or timeout >= work_timeout

    @contextlib.contextmanager
    def _room_for_checked(self) -> Iterator[claims.ClaimFor | None]:
        """The claim a check round's transaction may make (None: none), its slots held
        meanwhile."""
        with self._free_slots() as room:
            if room is None or self._stopping.is_set():
                yield None
            else:
                yield claims.ClaimFor(self.id, self._lease, room)

    @contextlib.contextmanager
    def _free_slots(self) -> Iterator[int | None]:
        """How many slots are free now (None: none), held for the context: a claim in a check
        round and one of the worker's loop may be under way at once, and together never take
        more than the worker's concurrency. The tasks claimed are started before the context
        ends."""
        room = self._settings.worker_concurrency - len(self._attempts) - self._reserved
        if room <= 0:
            yield None
            return
        self._reserved += room
        self._nothing_reserved.clear()
        try:
            yield room
        finally:
            self._reserved -= room
            if not self._reserved:
                self._nothing_reserved.set()

    async def _claim_while_room(self) -> None:
        while not self._stopping.is_set():
            with self._free_slots() as room:
                if room is None:
                    return
                round_ = await claims.claim_tasks(self.id, self._lease, room)
                self._outage.succeeded()
                self._contended = round_.contended
                claimed = round_.tasks
                self._start_attempts(claimed)
            if len(claimed) < room:
                return

    def _start_attempts(self, claimed: list[ClaimedTask]) -> None:
        self.metrics.claims.inc(len(claimed))
        for task in claimed:
            attempt = _Attempt(claimed=task, target=self._reach.target(task))
            self._attempts[task.task_id] = attempt
            attempt.runner = asyncio.create_task(
                self._run_attempt(attempt), name=f"{self.id}-task-{task.task_id}"
            )

    def _change_of(self, claimed: ClaimedTask) -> Change:
        return Change(
            installation=self._installation,
            task_id=claimed.task_id,
            attempt=claimed.attempt,
            type=claimed.type,
            statement=claimed.statement,
            database_name=claimed.database_name,
            lock_timeout_ms=self._settings.lock_timeout_ms,
            statement_timeout_ms=self._settings.statement_timeout_ms,
        )

    async def _run_attempt(self, attempt: _Attempt) -> None:
        claimed = attempt.claimed

        async def remember_backend(pid: int) -> None:
            attempt.backend_pid = pid

        try:
            started = time.monotonic()
            attempt.outcome = await targets.execute(
                attempt.target,
                self._change_of(claimed),
                on_backend_pid=remember_backend,
                sessions=functools.partial(
                    self._sessions.session,
                    claimed.instance_id,
                    claimed.max_running_tasks,
                    reusable=lambda: not attempt.cancel_sent,
                ),
                on_log=self._task_logs.listener(claimed.task_id),
            )
            took = time.monotonic() - started
            # The live lines not streamed yet go with the report, before the status change
            # that ends them, in its transaction.
            attempt.log_lines = await self._task_logs.take(claimed.task_id)
            await self._report_until_recorded(attempt, attempt.outcome)
            labels = (claimed.type.value, _ending_of(attempt, attempt.outcome).run_status.value)
            self.metrics.task_runs.labels(*labels).inc()
            self.metrics.task_run_duration.labels(*labels).observe(took)
        except Exception as error:
            # The type only: the message may hold SQL or the target's details. The task is no
            # longer renewed, so once its lease expires recovery settles it.
            logger.error(
                "%s: task %s failed inside the worker (%s)",
                self.id,
                claimed.task_id,
                type(error).__name__,
            )
        finally:
            self._attempts.pop(claimed.task_id, None)
            self._room.set()

    async def _report_until_recorded(self, attempt: _Attempt, outcome: Outcome) -> None:
        """Queue the attempt's report with the others of its pipeline, and wait until it is
        recorded (or dropped: the worker no longer held the task)."""
        pipeline_id = attempt.claimed.pipeline_id
        recorded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        finished = claims.Finished(
            attempt.claimed, _ending_of(attempt, outcome), outcome, attempt.log_lines
        )
        self._reports.setdefault(pipeline_id, []).append((finished, recorded))
        if pipeline_id not in self._waiting_reporters:
            reporter = asyncio.create_task(
                self._report_pipeline(pipeline_id), name=f"{self.id}-reports-{pipeline_id}"
            )
            self._waiting_reporters[pipeline_id] = reporter
            self._reporters.add(reporter)
            reporter.add_done_callback(self._reporters.discard)
        await recorded

    async def _report_pipeline(self, pipeline_id: int) -> None:
        # Finishes of one pipeline wait for each other's lock anyway. A reporter begins as soon
        # as a report comes and waits for the pipeline's lock in PostgreSQL while the one before
        # it records; once it holds the lock it takes every report that came meanwhile, and the
        # next report starts the next reporter. Only one waits at a time.
        taken: list[_Report] | None = None

        def take() -> list[_Report]:
            nonlocal taken
            if taken is None:
                self._stop_waiting(pipeline_id)
                taken = self._reports.pop(pipeline_id, [])
            return taken

        try:
            await self._record(pipeline_id, take)
        finally:
            # A reporter that stops before it held the lock takes its reports down with it.
            for _, recorded in take():
                recorded.cancel()

    def _stop_waiting(self, pipeline_id: int) -> None:
        if self._waiting_reporters.get(pipeline_id) is asyncio.current_task():
            del self._waiting_reporters[pipeline_id]

    async def _record(self, pipeline_id: int, take: Callable[[], list[_Report]]) -> None:
        """Record the reports `take` hands over (the same ones at every call) once the
        pipeline is locked."""
        # Retrying is safe: a report whose commit was lost on the wire finds the task no
        # longer held, and is dropped.
        while True:
            try:
                # The slots the attempts free go, in the same transaction, to the next tasks
                # of their pipeline that may start: no claim of their own, nor one that finds
                # the pipeline held.
                round_ = await claims.finish_queued_and_claim(
                    self.id,
                    pipeline_id,
                    lambda: [finished for finished, _ in take()],
                    self._lease,
                    claim=not self._stopping.is_set(),
                )
            except Exception as error:
                if database_unavailable(error):
                    await asyncio.sleep(self._outage.failed(error))
                    continue
                taken = take()  # what failed before the lock was held fails with it
                if len(taken) > 1:
                    # What failed may be one attempt's alone: the others are not held back.
                    for report in taken:
                        await self._record_alone(pipeline_id, report)
                    return
                for _, recorded in taken:
                    if not recorded.done():
                        recorded.set_exception(error)
                return
            self._outage.succeeded()
            break
        # Registered while the finished attempts still hold their slots: never above
        # concurrency.
        self._start_attempts(round_.claimed)
        for _, recorded in take():
            if not recorded.done():
                recorded.set_result(None)

    async def _record_alone(self, pipeline_id: int, report: _Report) -> None:
        await self._record(pipeline_id, lambda: [report])

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _heartbeat_loop(self) -> None:
        interval = self._settings.lease_seconds / 3
        delay = interval
        while True:
            await asyncio.sleep(delay)
            try:
                await self._renew_leases()
            except Exception as error:
                # Sooner than the interval: leases run out while the database is away.
                delay = min(interval, self._outage.failed(error))
            else:
                delay = interval

    def _renewal_wait(self) -> float:
        """How long until a renewal a notification asked for may go."""
        return self._renewed_at + WAKEUP_RENEWAL_SECONDS - time.monotonic()

    async def _renew_leases(self) -> None:
        """Extend the leases held, and start aborting the tasks a person asked to cancel."""
        if not self._attempts:
            return
        self._renewed_at = time.monotonic()
        cancel_requested = await claims.renew_leases(self.id, list(self._attempts), self._lease)
        self._outage.succeeded()
        for task_id in cancel_requested:
            attempt = self._attempts.get(task_id)
            if attempt is not None and not attempt.canceled_by_person:
                attempt.canceled_by_person = True
                self._in_background(self._cancel_on_target(attempt))

    async def _cancel_on_target(self, attempt: _Attempt) -> None:
        # A cancel only hits the statement running at that instant; one that lands between
        # statements (or before the first) is repeated until the attempt is over.
        while attempt.runner is not None and not attempt.runner.done():
            if attempt.backend_pid is not None:
                attempt.cancel_sent = True
                await targets.cancel_backend(attempt.target, attempt.backend_pid)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(attempt.runner), CANCEL_RETRY_SECONDS)

    async def _recovery_loop(self) -> None:
        interval = self._settings.lease_seconds / 2
        while True:
            try:
                await self.recover_expired()
            except Exception as error:
                await asyncio.sleep(min(interval, self._outage.failed(error)))
            else:
                self._outage.succeeded()
                await asyncio.sleep(interval)

    async def recover_expired(self) -> None:
        """Settle every task whose worker stopped renewing its lease."""
        for task_id in await claims.expired_task_ids():
            if task_id in self._attempts:
                # Our own lease ran out while the database was away; the attempt still runs
                # here (or is reporting), and the heartbeat renews it.
                continue
            claimed = await claims.interrupted_attempt(task_id)
            if claimed is None:
                continue
            target = self._reach.target(claimed)
            try:
                applied = await targets.change_was_applied(target, self._change_of(claimed))
            except targets.TargetUnreachable:
                logger.warning("task %s: its target is unreachable; will retry", task_id)
                continue
            settled = await claims.resolve_interrupted(claimed, applied=applied)
            if settled is not None:
                self.metrics.lease_recoveries.labels(settled.value).inc()
                logger.info("task %s recovered as %s", task_id, settled.value)

    def _unfinished_runners(self) -> set[asyncio.Task[None]]:
        return {
            attempt.runner
            for attempt in self._attempts.values()
            if attempt.runner is not None and not attempt.runner.done()
        }

    async def _drain(self) -> None:
        running = self._unfinished_runners()
        if not running:
            return
        logger.info("%s: waiting for %d running task(s) to finish", self.id, len(running))
        deadline = time.monotonic() + self._settings.shutdown_grace_seconds
        # A report under way when the worker was told to stop may still claim the next task
        # (see _report): wait for those too, within the same grace.
        while running and (left := deadline - time.monotonic()) > 0:
            await asyncio.wait(running, timeout=left)
            running = self._unfinished_runners()
        pending = running
        if not pending:
            return
        for attempt in list(self._attempts.values()):
            attempt.interrupted_by_shutdown = True
            self._in_background(self._cancel_on_target(attempt))
        await asyncio.wait(pending, timeout=CANCEL_WAIT_SECONDS)
        pending = self._unfinished_runners()
        # A target that does not answer even a cancel: stop waiting, and hand the task back
        # (or to a person) rather than leave it RUNNING until its lease runs out.
        for attempt in list(self._attempts.values()):
            if attempt.runner in pending and attempt.outcome is not None:
                # The target finished; only the report (to an unreachable database) is left.
                # Its lease expires and recovery settles it from the target's record.
                attempt.runner.cancel()
            elif attempt.runner in pending:
                attempt.runner.cancel()
                claimed = attempt.claimed
                await claims.finish_task(
                    self.id, claimed, abandoned(claimed.type, claimed.statement)
                )


def _ending_of(attempt: _Attempt, outcome: Outcome) -> AttemptEnd:
    """How an attempt that reached its target ends."""
    return ending(
        outcome,
        attempt.claimed.type,
        canceled_by_person=attempt.canceled_by_person,
        interrupted_by_shutdown=attempt.interrupted_by_shutdown,
    )


@contextlib.asynccontextmanager
async def running_worker(
    settings: Settings,
    cipher: PasswordCipher,
    database_url: str,
    listener: EventListener | None = None,
    metrics: Metrics | None = None,
) -> AsyncIterator[Worker]:
    """A worker for the life of the context, woken by `listener` (else by a LISTEN
    connection of its own); on exit it stops claiming and finishes or hands back what it
    holds."""
    async with contextlib.AsyncExitStack() as stack:
        if listener is None:
            listener = await stack.enter_async_context(running_listener(database_url))
        # Learned once: the runner refuses every connection that reaches this database.
        worker = Worker(
            settings, cipher, listener, await conveyor_database(), await installation_id(), metrics
        )
        work = asyncio.create_task(worker.run(), name=worker.id)
        try:
            yield worker
        finally:
            worker.stop()
            await work
