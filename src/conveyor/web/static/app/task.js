// One task: its statement, runs, events and actions, live.
import { html, useEffect, useMemo, useRef, useState } from "./lib.js";
import { refusal, request } from "./api.js";
import { coalesced, follow } from "./live.js";
import { Status, formatTime } from "./status.js";
import { TaskActions } from "./actions.js";
import { CHECK_FIELDS, TaskChecks } from "./checks.js";

/** How many of the task's events a read asks for at a time. */
const EVENTS_PAGE = 50;

const EVENT_FIELDS = "sequence kind actor createdAt oldStatus newStatus detail";

const TASK_QUERY = `query Task($id: ID!) {
  node(id: $id) {
    ... on Task {
      id name type status version statement databaseName notBefore statusReason
      approvedBy approvedAt cancelRequested availableActions lastSequence
      database { name } instance { name }
      stage { name environment { name } }
      pipeline { id issue { id title } }
      events(first: ${EVENTS_PAGE}) { ${EVENT_FIELDS} }
      blockedBy { id name status }
      waitingReason { kind message }
      runs { id attempt status startedAt endedAt errorCode errorMessage result log }
      ${CHECK_FIELDS}
    }
  }
}`;

const MORE_EVENTS = `query TaskEvents($id: ID!, $after: Int!) {
  node(id: $id) { ... on Task { events(first: ${EVENTS_PAGE}, afterSequence: $after) { ${EVENT_FIELDS} } } }
}`;

// Everything that happens in the task's pipeline, from the position the read is as new as:
// the task's own log lines are shown as they come, its other events read the task again.
const PIPELINE_ACTIVITY = `subscription ($pipelineId: ID!, $after: Int) {
  pipelineActivity(pipelineId: $pipelineId, after: $after) { sequence kind taskId detail }
}`;

/** A PostgreSQL error code; a run's other error codes are Conveyor's own. */
const SQLSTATE = /^[0-9A-Z]{5}$/;

/** One line of a run's log: a statement started or finished, a server notice, a message. */
function logLine(entry) {
  if (typeof entry === "string") return entry;
  const at = entry.at ? `${formatTime(entry.at)} ` : "";
  if (entry.kind === "statement") {
    // A stored log keeps each statement once, finished or not; the live stream tells both.
    const finished = entry.statusTag !== undefined;
    const outcome = finished ? ` → ${entry.statusTag} in ${entry.durationMs} ms` : "";
    return `${at}${finished ? "finished" : "started"}: ${entry.text}${outcome}`;
  }
  const kind = entry.severity ?? entry.kind ?? "log";
  return `${at}${kind}: ${entry.text ?? JSON.stringify(entry)}`;
}

function Run({ run, liveLog }) {
  const log = run.status === "RUNNING" ? [...run.log, ...liveLog] : run.log;
  return html`<li class="run" data-run=${run.attempt}>
    <h4>Attempt ${run.attempt} <${Status} status=${run.status} /></h4>
    <p>started ${formatTime(run.startedAt)}${run.endedAt ? ` · ended ${formatTime(run.endedAt)}` : ""}</p>
    ${run.errorMessage &&
    html`<p class="refusal">
      ${run.errorCode && html`<code class="sqlstate">${SQLSTATE.test(run.errorCode) ? "SQLSTATE " : ""}${run.errorCode}</code> `}${run.errorMessage}
    </p>`}
    ${run.result && html`<p>result: <code>${JSON.stringify(run.result)}</code></p>`}
    <details open=${run.status === "RUNNING"}>
      <summary>Log (${log.length} entries)</summary>
      <pre class="log">${log.map(logLine).join("\n")}</pre>
    </details>
  </li>`;
}

export function TaskView({ taskId }) {
  const [state, setState] = useState({ task: null, error: null });
  // Later pages of the task's events, and the log lines of its running attempt heard live
  // (a run's log is stored when the attempt ends).
  const [later, setLater] = useState({ events: [], lastPageFull: true });
  const [liveLog, setLiveLog] = useState([]);
  const refetch = useMemo(
    () =>
      coalesced(async () => {
        const { data, errors } = await request(TASK_QUERY, { id: taskId });
        const task = data?.node ?? null;
        if (task && !task.runs.some((run) => run.status === "RUNNING")) setLiveLog([]);
        setState({ task, error: task ? null : refusal(errors) ?? "no such task" });
      }),
    [taskId],
  );
  useEffect(() => {
    refetch();
    return () => refetch.cancel();
  }, [refetch]);

  const pipelineId = state.task?.pipeline.id;
  const readAt = useRef(null);
  readAt.current ??= state.task?.lastSequence ?? null;
  useEffect(() => {
    if (!pipelineId) return undefined;
    return follow(
      PIPELINE_ACTIVITY,
      (after) => ({ pipelineId, after: after ?? readAt.current }),
      (event) => {
        if (event.taskId !== taskId) return;
        if (event.kind === "TASK_LOG") setLiveLog((lines) => [...lines, ...(event.detail?.entries ?? [])]);
        else refetch();
      },
    );
  }, [pipelineId, taskId, refetch]);

  const readMoreEvents = async (after) => {
    const { data } = await request(MORE_EVENTS, { id: taskId, after });
    const page = data?.node?.events ?? [];
    setLater((current) => ({ events: [...current.events, ...page], lastPageFull: page.length === EVENTS_PAGE }));
  };

  const { task, error } = state;
  if (error) return html`<p class="refusal" role="alert">${error}</p>`;
  if (!task) return html`<p class="loading">Loading the task…</p>`;
  const issue = task.pipeline.issue;
  const firstPage = task.events;
  // A read of the task again brings a first page that may reach into the later ones.
  const events = [...firstPage, ...later.events.filter((event) => event.sequence > (firstPage.at(-1)?.sequence ?? 0))];
  const maybeMore = firstPage.length === EVENTS_PAGE && later.lastPageFull;
  return html`<article class="task-page" data-task-id=${task.id}>
    <p><a href="#/issues/${encodeURIComponent(issue.id)}">← ${issue.title}</a></p>
    <header>
      <h2>${task.name}</h2>
      <${Status} status=${task.status} />
    </header>
    <dl class="facts">
      <dt>Stage</dt><dd>${task.stage.environment.name}${task.stage.name !== task.stage.environment.name ? ` · ${task.stage.name}` : ""}</dd>
      <dt>Type</dt><dd>${task.type}</dd>
      <dt>Target</dt><dd>${[task.database?.name ?? task.databaseName, task.instance.name].filter(Boolean).join(" on ")}</dd>
      <dt>Version</dt><dd>${task.version}</dd>
      ${task.blockedBy.length > 0 &&
      html`<dt>Blocked by</dt><dd>${task.blockedBy.map(
        (blocker) => html`<a href="#/tasks/${encodeURIComponent(blocker.id)}">${blocker.name}</a> (<${Status} status=${blocker.status} />) `,
      )}</dd>`}
      ${task.waitingReason && html`<dt>Waits</dt><dd>${task.waitingReason.message}</dd>`}
      ${task.statusReason && html`<dt>Reason</dt><dd>${task.statusReason}</dd>`}
      ${task.approvedBy && html`<dt>Approved</dt><dd>by ${task.approvedBy}, ${formatTime(task.approvedAt)}</dd>`}
      ${task.notBefore && html`<dt>Not before</dt><dd>${formatTime(task.notBefore)}</dd>`}
    </dl>
    <${TaskActions} task=${task} onDone=${refetch} />
    ${task.statement !== null && html`<h3>Statement</h3><pre class="statement">${task.statement}</pre>`}
    ${task.statement !== null && html`<${TaskChecks} task=${task} onDone=${refetch} />`}
    <h3>Runs</h3>
    ${task.runs.length ? html`<ol class="runs">${task.runs.map((run) => html`<${Run} key=${run.id} run=${run} liveLog=${liveLog} />`)}</ol>` : html`<p>Not run yet.</p>`}
    <h3>Events</h3>
    <ol class="events">
      ${events.map(
        (event) => html`<li key=${event.sequence}>
          ${formatTime(event.createdAt)} · ${event.kind.toLowerCase().replaceAll("_", " ")} by ${event.actor}
          ${event.newStatus ? ` · ${(event.oldStatus ?? "").toLowerCase()} → ${event.newStatus.toLowerCase()}` : ""}
        </li>`,
      )}
    </ol>
    ${maybeMore &&
    html`<button type="button" class="more" onClick=${() => readMoreEvents(events.at(-1).sequence)}>Show more events</button>`}
  </article>`;
}
