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
    -- `= ANY` beside the join, as in end_attempts: an index condition on the task's key
    -- whatever the planner makes of the unnest.
    WHERE t.id = w.id AND t.id = ANY($1::int[]) AND t.status = w.old_status
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
       -- One index probe a status, as in end_attempts.
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

-- name: lock_pipeline
-- The pipeline, locked as every writer locks it first. $1 pipeline id.
SELECT id, issue_id, status FROM pipeline WHERE id = $1 FOR UPDATE;

-- name: end_attempts
-- The transitions that end attempts, on tasks of one pipeline this worker holds in the given
-- statuses: each task's row, its run row, its last log lines (a TASK_LOG event, when it has
-- any) and a TASK_STATUS_CHANGED event after them, and one NOTIFY for all. Runs under the
-- pipeline's lock (lock_pipeline or lock_pipeline_of_task), so what it reads of the other
-- tasks is current: for each ended task the statuses of its stage's tasks not ended here (the
-- stage's roll-up), and one task of the pipeline not ended here that is not finished (none:
-- the pipeline may roll up). A task not held as given is left alone and returns no row.
-- $1 task ids, $2 their statuses now, $3 the statuses their actions lead to, $4 status
-- reasons, $5 database ids to link (NULL keeps the task's), $6 run ids, $7 run statuses,
-- $8 error codes, $9 error messages, $10 results (JSON), $11 logs (JSON), $12 transactional,
-- $13 status events' details (JSON), $14 log events' details (JSON; NULL: no lines), $15 worker,
-- $16 event-order lock key, $17 the status event's kind, $18 actor, $19 the log event's kind,
-- $20 channel, $21 the statuses not finished, $22 every task status.
WITH ending AS (
    SELECT *
    FROM unnest($1::int[], $2::text[], $3::text[], $4::text[], $5::int[], $6::int[],
                $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::bool[],
                $13::text[], $14::text[])
        AS e (task_id, old_status, new_status, status_reason, database_id, run_id, run_status,
              error_code, error_message, result, log, transactional, status_detail,
              log_detail)
), ended AS (
    UPDATE task t
    SET status = e.new_status, version = t.version + 1, updated_at = now(),
        lease_owner = NULL, lease_expires_at = NULL, cancel_requested_at = NULL,
        status_reason = e.status_reason, database_id = coalesce(e.database_id, t.database_id)
    FROM ending e
    -- `= ANY` beside the join: an index condition on the task's key whatever the planner
    -- estimates of the unnest.
    WHERE t.id = e.task_id AND t.id = ANY($1::int[]) AND t.lease_owner = $15
      AND t.status = e.old_status
    RETURNING t.id, t.pipeline_id, t.stage_id, e.*
), run AS (
    UPDATE task_run r
    SET status = d.run_status, ended_at = now(), error_code = d.error_code,
        error_message = d.error_message, result = coalesce(d.result::jsonb, r.result),
        log = coalesce(d.log::jsonb, r.log), transactional = coalesce(d.transactional, r.transactional)
    FROM ended d
    WHERE r.id = d.run_id
    RETURNING r.id
), ordered AS (
    SELECT pg_advisory_xact_lock($16) AS held WHERE EXISTS (SELECT FROM ended)
), events AS (
    -- Sequence numbers are drawn in row order: a task's log lines come before the status
    -- change that ends them.
    INSERT INTO event (created_at, kind, actor, issue_id, pipeline_id, stage_id, task_id,
                       old_status, new_status, detail)
    SELECT now(), n.kind, $18, p.issue_id, d.pipeline_id, d.stage_id, d.id,
           n.old_status, n.new_status, n.detail::jsonb
    FROM ordered, ended d JOIN pipeline p ON p.id = d.pipeline_id,
         LATERAL (VALUES (1, $19::text, NULL::text, NULL::text, d.log_detail),
                         (2, $17::text, d.old_status, d.new_status, d.status_detail))
             AS n (place, kind, old_status, new_status, detail)
    WHERE n.place = 2 OR d.log_detail IS NOT NULL
    ORDER BY d.id, n.place
    RETURNING id
), notified AS (
    SELECT pg_notify($20, max(id)::text) AS sent FROM events HAVING count(*) > 0
)
SELECT d.id, d.stage_id,
       (SELECT count(*) FROM run) AS runs,
       (SELECT count(*) FROM notified) AS notified,
       -- One index probe a status, each a scalar subquery: PostgreSQL may turn an EXISTS
       -- into a join that reads every task of the pipeline (it did, on a new pipeline of a
       -- thousand tasks, not yet analyzed: 1.4 ms a finish instead of 0.1).
       ARRAY(
           SELECT s.status FROM unnest($22::text[]) AS s (status)
           WHERE (
               SELECT true FROM task t
               WHERE t.pipeline_id = d.pipeline_id AND t.status = s.status
                 AND t.stage_id = d.stage_id AND t.id <> ALL($1::int[])
               LIMIT 1
           )
       ) AS stage_others,
       ARRAY(
           SELECT s.status FROM unnest($21::text[]) AS s (status)
           WHERE (
               SELECT true FROM task t
               WHERE t.pipeline_id = d.pipeline_id AND t.status = s.status
                 AND t.id <> ALL($1::int[])
               LIMIT 1
           )
           LIMIT 1
       ) AS unfinished
FROM ended d
ORDER BY d.id;

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
