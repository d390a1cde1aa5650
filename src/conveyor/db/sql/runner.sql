-- The runner's hot path, one named statement each. Loaded by conveyor.db.queries; every
-- status written here is one the transition table allowed (see db.task_status).

-- name: pipelines_with_startable_work
-- Open pipelines with a task START may be taken from, whose not-before time has come and
-- whose checks have finished for its statement (domain.check_review.CheckGate.PENDING keeps
-- a task from starting whatever else holds), oldest first: a new issue's notification finds
-- its tasks still waiting for their checks, and the claim round it wakes skips the pipeline
-- instead of locking it for nothing while the checks are recorded; their recording notifies.
-- $1 limit, $2 the statuses START is taken from, $3 the open pipeline status.
SELECT t.pipeline_id
FROM task t JOIN pipeline p ON p.id = t.pipeline_id
WHERE t.status = ANY($2::text[]) AND p.status = $3
  AND (t.not_before IS NULL OR t.not_before <= now())
  AND t.checked_version = t.statement_version
GROUP BY t.pipeline_id
ORDER BY min(t.id)
LIMIT $1;

-- name: lock_pipeline_for_claim
-- The pipeline, held against a person's action (FOR UPDATE waits for it) but skipped by a
-- second claimer. $1 pipeline id, $2 the open pipeline status.
SELECT id FROM pipeline WHERE id = $1 AND status = $2 FOR NO KEY UPDATE SKIP LOCKED;

-- name: start_candidates
-- Of a pipeline the caller holds, the tasks the scheduling decision could start, narrowed by
-- its own rules so that a claim reads neither finished tasks nor later stages: only the
-- active stage (the first with a task not finished), only tasks in a status START is taken
-- from, whose not-before time has come, with no unfinished blocker (a blocker that is not a
-- task of this pipeline counts as unfinished), whose checks let it run, whose database no
-- task occupies, and of those only the first on each database. The decision itself (the
-- instance's limit, one task per database) is still taken, on these rows, by
-- domain.scheduling.decide.
-- $1 pipeline id, $2 the finished statuses, $3 the statuses START is taken from,
-- $4 the occupying statuses, $5 the statuses not finished (probed by index, one by one).
WITH active AS (
    SELECT s.id, s.name FROM stage s
    WHERE s.pipeline_id = $1
      AND EXISTS (
          SELECT FROM task u
          WHERE u.pipeline_id = $1 AND u.status = ANY($5::text[]) AND u.stage_id = s.id
      )
    ORDER BY s.position
    LIMIT 1
), waiting AS (
    SELECT t.id, t.status, t.instance_id, t.database_id, t.not_before, t.statement_version,
           t.checked_version, t.blocking_rules, t.checks_overridden_version
    FROM active a
    JOIN task t ON t.pipeline_id = $1 AND t.stage_id = a.id
    WHERE t.status = ANY($3::text[])
), free_databases AS (
    -- Each database tested once, after DISTINCT: not once per waiting task.
    SELECT d.database_id
    FROM (SELECT DISTINCT w.database_id FROM waiting w WHERE w.database_id IS NOT NULL) d
    WHERE NOT EXISTS (
        SELECT FROM task r WHERE r.database_id = d.database_id AND r.status = ANY($4::text[])
    )
), ready AS (
    SELECT w.* FROM waiting w
    WHERE (w.database_id IS NULL OR w.database_id IN (SELECT database_id FROM free_databases))
      AND (w.not_before IS NULL OR w.not_before <= now())
      AND NOT EXISTS (
          SELECT FROM task_dependency d
          LEFT JOIN task b ON b.id = d.blocked_by_id AND b.pipeline_id = $1
          WHERE d.task_id = w.id AND (b.id IS NULL OR b.status <> ALL($2::text[]))
      )
      -- The checks let it run: domain.check_review.CheckFacts.gate is PASSED or OVERRIDDEN
      -- (tests/integration/test_start_candidates.py holds the two to the same answers).
      AND w.checked_version = w.statement_version
      AND (w.blocking_rules = '[]'::jsonb OR w.checks_overridden_version = w.statement_version)
), chosen AS (
    -- The first ready task on each free database, the only one of them the decision could
    -- start (it takes the database), and every ready instance-level task: a claim reads a
    -- few rows, not every waiting task of a large stage.
    SELECT DISTINCT ON (coalesce(r.database_id, -r.id)) r.*
    FROM ready r
    ORDER BY coalesce(r.database_id, -r.id), r.id
)
SELECT a.id AS stage_id, a.name AS stage_name, c.id, c.status, c.instance_id, c.database_id,
       c.not_before, c.statement_version, c.checked_version, c.blocking_rules::text,
       c.checks_overridden_version, '{}'::int[] AS blocked_by
FROM chosen c, active a
ORDER BY c.id;

-- name: occupancy
-- The cluster's tasks in an occupying status on these instances, one row each, and every
-- instance's limit (an instance running nothing comes as one row without a task).
-- $1 instance ids, $2 the occupying statuses.
SELECT i.id AS instance_id, i.max_running_tasks, t.id AS task_id, t.database_id
FROM instance i
LEFT JOIN task t ON t.instance_id = i.id AND t.status = ANY($2::text[])
WHERE i.id = ANY($1::int[]);

-- name: start_tasks
-- START on tasks of one pipeline the caller holds: each task's row, a run row, a
-- TASK_STATUS_CHANGED event, and one NOTIFY for the whole batch; with each, the statuses of
-- its stage's other tasks. A task whose status is not
-- the one given (read under the pipeline's lock) is left alone.
-- $1 task ids, $2 their statuses now, $3 the status START leads to, $4 worker,
-- $5 lease seconds, $6 the run's status, $7 event-order lock key, $8 event kind, $9 actor,
-- $10 channel, $11 every task status.
WITH wanted AS (
    SELECT * FROM unnest($1::int[], $2::text[]) AS w (id, old_status)
), started AS (
    UPDATE task t
    SET status = $3, version = t.version + 1, updated_at = now(),
        lease_owner = $4, lease_expires_at = now() + $5 * interval '1 second',
        cancel_requested_at = NULL, status_reason = NULL
    FROM wanted w
    WHERE t.id = w.id AND t.status = w.old_status
    RETURNING t.id, t.pipeline_id, t.stage_id, t.type, t.statement, t.database_name,
              t.instance_id, t.database_id, w.old_status
), runs AS (
    INSERT INTO task_run (task_id, attempt, status, started_at, worker)
    SELECT s.id,
           coalesce((SELECT max(r.attempt) FROM task_run r WHERE r.task_id = s.id), 0) + 1,
           $6, clock_timestamp(), $4
    FROM started s
    RETURNING id, task_id, attempt
), ordered AS (
    -- Held before a sequence number is drawn, as db.events.record_events explains.
    SELECT pg_advisory_xact_lock($7) AS held
), events AS (
    INSERT INTO event (created_at, kind, actor, issue_id, pipeline_id, stage_id, task_id,
                       old_status, new_status)
    SELECT now(), $8, $9, p.issue_id, s.pipeline_id, s.stage_id, s.id, s.old_status, $3
    FROM ordered, started s JOIN pipeline p ON p.id = s.pipeline_id
    ORDER BY s.id
    RETURNING id
), notified AS (
    SELECT pg_notify($10, max(id)::text) AS sent FROM events HAVING count(*) > 0
)
SELECT s.id AS task_id, r.id AS run_id, r.attempt, s.type, s.statement, s.database_name,
       s.pipeline_id, s.instance_id, i.max_running_tasks, i.host, i.port, i.username,
       i.password_encrypted,
       i.connection_options::text AS connection_options, d.name AS target_database,
       s.stage_id, s.old_status, (SELECT issue_id FROM pipeline WHERE id = s.pipeline_id) AS issue_id,
       (SELECT count(*) FROM notified) AS notified,
       -- Read before the update (a statement sees the rows as they were when it started):
       -- the statuses of the stage's tasks this claim leaves alone, for the stage's roll-up.
       -- One index probe a status, as in end_attempt.
       ARRAY(
           SELECT st.status FROM unnest($11::text[]) AS st (status)
           WHERE (
               SELECT true FROM task o
               WHERE o.pipeline_id = s.pipeline_id AND o.status = st.status
                 AND o.stage_id = s.stage_id AND o.id NOT IN (SELECT id FROM started)
               LIMIT 1
           )
       ) AS stage_others
FROM started s
JOIN runs r ON r.task_id = s.id
JOIN instance i ON i.id = s.instance_id
LEFT JOIN database d ON d.id = s.database_id
ORDER BY s.id;

-- name: lock_pipeline_of_task
-- The task's pipeline, locked as every writer locks it first. $1 task id.
SELECT p.id, p.issue_id, p.status
FROM pipeline p
WHERE p.id = (SELECT pipeline_id FROM task WHERE id = $1)
FOR UPDATE;

-- name: end_attempt
-- The transition that ends an attempt, on a task this worker holds in the given status: the
-- task's row, its run row, the task's last log lines (a TASK_LOG event, when it has any) and
-- a TASK_STATUS_CHANGED event after them, and their one NOTIFY. Runs under the pipeline's
-- lock (lock_pipeline_of_task), so what it reads of the other tasks is current: the statuses
-- of the stage's other tasks (the stage's roll-up) and one task of the pipeline, besides this
-- one, that is not finished (none: the pipeline may roll up).
-- $1 task id, $2 worker, $3 the status now, $4 the status the action leads to,
-- $5 status_reason, $6 database id to link (NULL keeps it), $7 run id, $8 run status,
-- $9 error code, $10 error message, $11 result, $12 log, $13 transactional,
-- $14 event-order lock key, $15 event kind, $16 actor, $17 event detail, $18 channel,
-- $19 the statuses not finished, $20 the log event's kind, $21 its detail (NULL: no lines),
-- $22 every task status.
WITH ended AS (
    UPDATE task t
    SET status = $4, version = t.version + 1, updated_at = now(),
        lease_owner = NULL, lease_expires_at = NULL, cancel_requested_at = NULL,
        status_reason = $5, database_id = coalesce($6, t.database_id)
    WHERE t.id = $1 AND t.lease_owner = $2 AND t.status = $3
    RETURNING t.id, t.pipeline_id, t.stage_id
), run AS (
    UPDATE task_run
    SET status = $8, ended_at = now(), error_code = $9, error_message = $10,
        result = coalesce($11::jsonb, result), log = coalesce($12::jsonb, log),
        transactional = coalesce($13, transactional)
    WHERE id = $7 AND EXISTS (SELECT FROM ended)
    RETURNING id
), ordered AS (
    SELECT pg_advisory_xact_lock($14) AS held FROM ended
), events AS (
    -- Sequence numbers are drawn in row order: the log lines come before the status change
    -- that ends them.
    INSERT INTO event (created_at, kind, actor, issue_id, pipeline_id, stage_id, task_id,
                       old_status, new_status, detail)
    SELECT now(), n.kind, $16, p.issue_id, e.pipeline_id, e.stage_id, e.id,
           n.old_status, n.new_status, n.detail
    FROM ordered, ended e JOIN pipeline p ON p.id = e.pipeline_id,
         (VALUES (1, $20::text, NULL::text, NULL::text, $21::jsonb),
                 (2, $15::text, $3::text, $4::text, $17::jsonb))
             AS n (place, kind, old_status, new_status, detail)
    WHERE n.place = 2 OR $21::jsonb IS NOT NULL
    ORDER BY n.place
    RETURNING id
), notified AS (
    SELECT pg_notify($18, max(id)::text) AS sent FROM events HAVING count(*) > 0
)
SELECT e.id, e.stage_id,
       (SELECT count(*) FROM run) AS runs,
       (SELECT count(*) FROM notified) AS notified,
       -- One index probe a status, each a scalar subquery: PostgreSQL may turn an EXISTS
       -- into a join that reads every task of the pipeline (it did, on a new pipeline of a
       -- thousand tasks, not yet analyzed: 1.4 ms a finish instead of 0.1).
       ARRAY(
           SELECT s.status FROM unnest($22::text[]) AS s (status)
           WHERE (
               SELECT true FROM task t
               WHERE t.pipeline_id = e.pipeline_id AND t.status = s.status
                 AND t.stage_id = e.stage_id AND t.id <> e.id
               LIMIT 1
           )
       ) AS stage_others,
       ARRAY(
           SELECT s.status FROM unnest($19::text[]) AS s (status)
           WHERE (
               SELECT true FROM task t
               WHERE t.pipeline_id = e.pipeline_id AND t.status = s.status AND t.id <> e.id
               LIMIT 1
           )
           LIMIT 1
       ) AS unfinished
FROM ended e;

-- name: renew_leases
-- Extend the leases this worker holds on tasks still in an occupying status; which of them a
-- person asked to cancel. The rows are locked in id order: two renewals of one worker (its
-- heartbeat and one a notification asked for) once deadlocked, each locking the rows in the
-- order its plan met them. $1 task ids, $2 worker, $3 lease seconds, $4 occupying statuses.
UPDATE task SET lease_expires_at = now() + $3 * interval '1 second'
WHERE id IN (
    SELECT id FROM task
    WHERE id = ANY($1::int[]) AND lease_owner = $2 AND status = ANY($4::text[])
    ORDER BY id
    FOR NO KEY UPDATE
)
RETURNING id, cancel_requested_at IS NOT NULL AS cancel_requested;
