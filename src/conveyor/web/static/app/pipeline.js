// An issue's pipeline: stages as columns, tasks as chips, live.
import { html, memo, useEffect, useMemo, useRef, useState } from "./lib.js";
import { refusal, request } from "./api.js";
import { coalesced, follow } from "./live.js";
import { Status } from "./status.js";
import { StageActions, TaskActions } from "./actions.js";

/** How many tasks a column reads at first, and how many more each time it is extended:
 *  `Stage.tasks` is a bounded list (at most CONVEYOR_MAX_PAGE_SIZE, 100, a read). */
const FIRST_TASKS = 40;
const MORE_TASKS = 100;

const TASK_FIELDS = `
  id name type status version statusReason cancelRequested
  database { name } instance { name }
  waitingReason { kind message }
  availableActions`;

const PIPELINE_QUERY = `query Pipeline($id: ID!) {
  node(id: $id) {
    ... on Issue {
      id title description creator status createdAt
      pipeline {
        id status
        stages {
          id name status
          environment { name approvalPolicy }
          taskCounts { done skipped total }
          tasks(first: ${FIRST_TASKS}) { ${TASK_FIELDS} }
        }
      }
    }
  }
}`;

const MORE_STAGE_TASKS = `query StageTasks($id: ID!, $after: ID!) {
  node(id: $id) { ... on Stage { tasks(first: ${MORE_TASKS}, after: $after) { ${TASK_FIELDS} } } }
}`;

// The snapshot is asked for only for its sequence number: the position in the event log
// the page's first read is at least as new as, to resume from after a dropped connection.
// A change carries the task's new status, shown at once while the pipeline is read again
// for everything else (actions, waiting reasons, counts).
const TASKS_CHANGED = `subscription ($pipelineId: ID!, $after: Int, $snapshot: Boolean!) {
  taskStatusChanged(pipelineId: $pipelineId, after: $after, snapshot: $snapshot) {
    sequence
    ... on TaskStatusChange { taskId newStatus reason }
  }
}`;
const PIPELINE_CHANGED = `subscription ($pipelineId: ID!, $after: Int) {
  pipelineStatusChanged(pipelineId: $pipelineId, after: $after) { sequence }
}`;

/** How far below the window a column starts reading its next tasks, so that they are
 *  ready before they scroll into view. */
const AHEAD = "0px 0px 1200px 0px";

// Render times of big pipelines, for the browser test and the README.
window.conveyorRenders = window.conveyorRenders || [];

// Each task object as it was read, by the JSON of its fields, to tell a changed one.
const taskJson = new WeakMap();

/** The tasks of `issue`, each the `previous` issue's object if no field changed. */
function keepUnchanged(previous, issue) {
  if (!issue) return issue;
  const before = new Map();
  for (const stage of previous?.pipeline.stages ?? []) {
    for (const task of stage.tasks) before.set(task.id, task);
  }
  const stages = issue.pipeline.stages.map((stage) => ({
    ...stage,
    tasks: stage.tasks.map((task) => {
      const json = JSON.stringify(task);
      const old = before.get(task.id);
      if (old && taskJson.get(old) === json) return old;
      taskJson.set(task, json);
      return task;
    }),
  }));
  return { ...issue, pipeline: { ...issue.pipeline, stages } };
}

/** `issue` with each stage's tasks followed by those of its later pages, read on demand. */
function withLaterPages(issue, later) {
  if (!issue || later.size === 0) return issue;
  const stages = issue.pipeline.stages.map((stage) =>
    later.has(stage.id) ? { ...stage, tasks: [...stage.tasks, ...later.get(stage.id)] } : stage,
  );
  return { ...issue, pipeline: { ...issue.pipeline, stages } };
}

/** `issue` with the statuses the subscription reported since it was read. */
function withChanges(issue, changes) {
  if (!issue || changes.size === 0) return issue;
  const stages = issue.pipeline.stages.map((stage) => ({ ...stage, tasks: withStatuses(stage.tasks, changes) }));
  return { ...issue, pipeline: { ...issue.pipeline, stages } };
}

/** `tasks`, each with the status and reason of its change in `changes`, if any. */
function withStatuses(tasks, changes) {
  return tasks.map((task) => {
    const change = changes.get(task.id);
    return change ? { ...task, status: change.status, statusReason: change.reason } : task;
  });
}

/** The later pages of each stage (see `withLaterPages`) with `changes` applied. */
function withChangesInPages(later, changes) {
  if (changes.size === 0) return later;
  const pages = new Map();
  for (const [stageId, tasks] of later) pages.set(stageId, withStatuses(tasks, changes));
  return pages;
}

function useLivePipeline(issueId) {
  const [state, setState] = useState({ issue: null, error: null });
  const [live, setLive] = useState("connecting");
  const pending = useRef(null);
  // Status changes received, by task id, and the last sequence number received: a read
  // begun after a change has it already, so the change is dropped when the read lands.
  const changes = useRef(new Map());
  const received = useRef(0);
  // The tasks of each stage's later pages, by stage id, and the stages being read.
  const later = useRef(new Map());
  const reading = useRef(new Set());
  const refetch = useMemo(
    () =>
      coalesced(async () => {
        const fetched = performance.now();
        const readAfter = received.current;
        const { data, errors } = await request(PIPELINE_QUERY, { id: issueId });
        // The read has these changes in the stages' first pages; the later pages were read
        // before, so they take the changes over before the changes are dropped.
        const settled = new Map();
        for (const [taskId, change] of changes.current) {
          if (change.sequence <= readAfter) {
            settled.set(taskId, change);
            changes.current.delete(taskId);
          }
        }
        later.current = withChangesInPages(later.current, settled);
        const start = performance.now();
        pending.current = { fetchedMs: start - fetched, start };
        setState((current) => {
          // A read has the stages' first pages; their later pages, read when the columns
          // were extended, keep the statuses the subscription reported since.
          const read = keepUnchanged(current.issue, withLaterPages(data?.node ?? null, later.current));
          const issue = withChanges(read, changes.current);
          return { issue, error: issue ? null : refusal(errors) ?? "no such issue" };
        });
      }),
    [issueId],
  );
  const showChanges = useMemo(
    () =>
      coalesced(async () =>
        setState((current) => ({ ...current, issue: withChanges(current.issue, changes.current) })),
      ),
    [],
  );
  const readMore = useMemo(
    () => async (stage) => {
      if (reading.current.has(stage.id)) return;
      reading.current.add(stage.id);
      const after = stage.tasks[stage.tasks.length - 1].id;
      const { data } = await request(MORE_STAGE_TASKS, { id: stage.id, after });
      reading.current.delete(stage.id);
      const page = data?.node?.tasks;
      if (!page?.length) return;
      later.current.set(stage.id, [...(later.current.get(stage.id) ?? []), ...page]);
      setState((current) => {
        // A read of the pipeline that landed meanwhile has the page already.
        const stages = current.issue.pipeline.stages.map((each) =>
          each.id === stage.id && !each.tasks.some((task) => task.id === page[0].id)
            ? { ...each, tasks: [...each.tasks, ...page] }
            : each,
        );
        const issue = { ...current.issue, pipeline: { ...current.issue.pipeline, stages } };
        return { ...current, issue: withChanges(issue, changes.current) };
      });
    },
    [],
  );
  useEffect(() => {
    refetch();
    return () => {
      refetch.cancel();
      showChanges.cancel();
    };
  }, [refetch]);

  const pipelineId = state.issue?.pipeline.id;
  useEffect(() => {
    if (!pipelineId) return undefined;
    let stopPipeline = null;
    const stopTasks = follow(
      TASKS_CHANGED,
      (after) => ({ pipelineId, after, snapshot: after === null }),
      (message) => {
        received.current = message.sequence;
        stopPipeline ??= follow(
          PIPELINE_CHANGED,
          (after) => ({ pipelineId, after: after ?? message.sequence }),
          refetch,
        );
        if (message.taskId) {
          changes.current.set(message.taskId, {
            sequence: message.sequence,
            status: message.newStatus,
            reason: message.reason,
          });
          showChanges();
        }
        refetch();
      },
      setLive,
    );
    return () => {
      stopTasks();
      stopPipeline?.();
    };
  }, [pipelineId, refetch]);

  // Measured after the browser has laid out and painted what was rendered.
  useEffect(() => {
    const measuring = pending.current;
    if (!measuring || !state.issue) return;
    pending.current = null;
    requestAnimationFrame(() =>
      setTimeout(() => {
        const stages = state.issue.pipeline.stages;
        window.conveyorRenders.push({
          tasks: stages.reduce((n, stage) => n + stage.tasks.length, 0),
          total: stages.reduce((n, stage) => n + stage.taskCounts.total, 0),
          fetchMs: measuring.fetchedMs,
          renderMs: performance.now() - measuring.start,
        });
      }),
    );
  }, [state]);

  return { ...state, live, refetch, readMore };
}

// A chip renders again only when its task changed: a read of the pipeline keeps the objects
// of unchanged tasks (see `keepUnchanged`), and a status change replaces only its task's.
const TaskChip = memo(({ task, onDone }) => {
  const target = [task.database?.name, task.instance.name].filter(Boolean).join(" on ");
  return html`<li class="task status-${task.status.toLowerCase()}" data-task-id=${task.id}>
    <div class="task-head">
      <${Status} status=${task.status} />
      <a href="#/tasks/${encodeURIComponent(task.id)}">${task.name}</a>
    </div>
    <div class="task-meta">${task.type.toLowerCase().replace("_", " ")} · ${target}</div>
    ${task.cancelRequested && html`<div class="task-note">cancel requested</div>`}
    ${task.statusReason && html`<div class="task-note">${task.statusReason}</div>`}
    ${task.waitingReason &&
    html`<div class="task-note waiting" data-waiting=${task.waitingReason.kind}>
      waits: ${task.waitingReason.message}
    </div>`}
    <${TaskActions} task=${task} onDone=${onDone} />
  </li>`;
});

function StageColumn({ stage, onDone, onMore }) {
  const more = useRef(null);
  const hidden = stage.taskCounts.total - stage.tasks.length;
  // A column reads its next tasks as its end nears the window: a 5,000-task pipeline opens
  // at once. A new observer after each page reports at once whether the end is still near.
  useEffect(() => {
    if (hidden <= 0 || !more.current) return undefined;
    const observer = new IntersectionObserver(
      (entries) => {
        if (entries.some((entry) => entry.isIntersecting)) onMore(stage);
      },
      { rootMargin: AHEAD },
    );
    observer.observe(more.current);
    return () => observer.disconnect();
  }, [stage.tasks.length, hidden > 0]);
  const finished = stage.taskCounts.done + stage.taskCounts.skipped;
  return html`<section class="stage" aria-labelledby="stage-${stage.id}" data-stage-id=${stage.id}>
    <header class="stage-head">
      <h3 id="stage-${stage.id}">${stage.environment.name}${stage.name !== stage.environment.name ? ` · ${stage.name}` : ""}</h3>
      <${Status} status=${stage.status} />
      <div class="stage-counts">${finished} of ${stage.taskCounts.total} finished${stage.environment.approvalPolicy === "MANUAL" ? " · needs approval" : ""}</div>
      <${StageActions} stage=${stage} onDone=${onDone} />
    </header>
    <ol class="tasks">
      ${stage.tasks.map((task) => html`<${TaskChip} key=${task.id} task=${task} onDone=${onDone} />`)}
    </ol>
    ${hidden > 0 &&
    html`<button type="button" class="more" ref=${more} onClick=${() => onMore(stage)}>
      Show more tasks (${hidden} not shown)
    </button>`}
  </section>`;
}

export function PipelineView({ issueId }) {
  const { issue, error, live, refetch, readMore } = useLivePipeline(issueId);
  if (error) return html`<p class="refusal" role="alert">${error}</p>`;
  if (!issue) return html`<p class="loading">Loading the pipeline…</p>`;
  return html`<article class="pipeline" data-pipeline-id=${issue.pipeline.id}>
    <header class="pipeline-head">
      <h2>${issue.title}</h2>
      <${Status} status=${issue.status} />
      <span class="live live-${live}" role="status">${live === "live" ? "● live" : live}</span>
      <p class="meta">opened by ${issue.creator}${issue.description ? ` · ${issue.description}` : ""}</p>
    </header>
    <div class="stages" aria-label="Stages, in the order they run">
      ${issue.pipeline.stages.map((stage) => html`<${StageColumn} key=${stage.id} stage=${stage} onDone=${refetch} onMore=${readMore} />`)}
    </div>
  </article>`;
}

