// One task: its statement, runs, events and actions, live.
import { html, useEffect, useMemo, useState } from "./lib.js";
import { refusal, request } from "./api.js";
import { coalesced, follow } from "./live.js";
import { Status, formatTime } from "./status.js";
import { TaskActions } from "./actions.js";

const TASK_QUERY = `query Task($id: ID!) {
  node(id: $id) {
    ... on Task {
      id name type status version statement databaseName notBefore statusReason
      approvedBy approvedAt cancelRequested availableActions
      database { name } instance { name }
      stage { name environment { name } }
      pipeline { issue { id title events { sequence kind actor createdAt taskId oldStatus newStatus detail } } }
      blockedBy { id name status }
      waitingReason { kind message }
      runs { id attempt status startedAt endedAt errorCode errorMessage result log }
    }
  }
}`;

const TASK_CHANGED = `subscription ($taskId: ID!, $after: Int, $snapshot: Boolean!) {
  taskStatusChanged(taskId: $taskId, after: $after, snapshot: $snapshot) { sequence }
}`;

/** A PostgreSQL error code; a run's other error codes are Conveyor's own. */
const SQLSTATE = /^[0-9A-Z]{5}$/;

/** How often a running task's runs are read again: the API has no live run log. */
const RUNNING_REFRESH_MS = 1000;

function Run({ run }) {
  return html`<li class="run" data-run=${run.attempt}>
    <h4>Attempt ${run.attempt} <${Status} status=${run.status} /></h4>
    <p>started ${formatTime(run.startedAt)}${run.endedAt ? ` · ended ${formatTime(run.endedAt)}` : ""}</p>
    ${run.errorMessage &&
    html`<p class="refusal">
      ${run.errorCode && html`<code class="sqlstate">${SQLSTATE.test(run.errorCode) ? "SQLSTATE " : ""}${run.errorCode}</code> `}${run.errorMessage}
    </p>`}
    ${run.result && html`<p>result: <code>${JSON.stringify(run.result)}</code></p>`}
    <details open=${run.status === "RUNNING"}>
      <summary>Log (${run.log.length} entries)</summary>
      <pre class="log">${run.log.map((entry) => (typeof entry === "string" ? entry : JSON.stringify(entry))).join("\n")}</pre>
    </details>
  </li>`;
}

export function TaskView({ taskId }) {
  const [state, setState] = useState({ task: null, error: null });
  const refetch = useMemo(
    () =>
      coalesced(async () => {
        const { data, errors } = await request(TASK_QUERY, { id: taskId });
        const task = data?.node ?? null;
        setState({ task, error: task ? null : refusal(errors) ?? "no such task" });
      }),
    [taskId],
  );
  useEffect(() => {
    refetch();
    const stop = follow(TASK_CHANGED, (after) => ({ taskId, after, snapshot: after === null }), refetch);
    return () => {
      stop();
      refetch.cancel();
    };
  }, [refetch]);
  const running = state.task?.status === "RUNNING";
  useEffect(() => {
    if (!running) return undefined;
    const timer = setInterval(refetch, RUNNING_REFRESH_MS);
    return () => clearInterval(timer);
  }, [running, refetch]);

  const { task, error } = state;
  if (error) return html`<p class="refusal" role="alert">${error}</p>`;
  if (!task) return html`<p class="loading">Loading the task…</p>`;
  const issue = task.pipeline.issue;
  const events = issue.events.filter((event) => event.taskId === task.id);
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
    <h3>Runs</h3>
    ${task.runs.length ? html`<ol class="runs">${task.runs.map((run) => html`<${Run} key=${run.id} run=${run} />`)}</ol>` : html`<p>Not run yet.</p>`}
    <h3>Events</h3>
    <ol class="events">
      ${events.map(
        (event) => html`<li key=${event.sequence}>
          ${formatTime(event.createdAt)} · ${event.kind.toLowerCase().replaceAll("_", " ")} by ${event.actor}
          ${event.newStatus ? ` · ${(event.oldStatus ?? "").toLowerCase()} → ${event.newStatus.toLowerCase()}` : ""}
        </li>`,
      )}
    </ol>
  </article>`;
}
