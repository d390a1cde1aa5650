// The buttons for what the caller may do to a task: exactly its `availableActions`.
import { html, useEffect, useRef, useState } from "./lib.js";
import { refusal, request } from "./api.js";

const TASK_FIELDS = "id status version";

const SIMPLE_ACTIONS = {
  APPROVE: { label: "Approve", mutation: "approveTask" },
  RUN_NOW: { label: "Run now", mutation: "runTaskNow" },
  RETRY: { label: "Retry", mutation: "retryTask" },
  CANCEL: { label: "Cancel", mutation: "cancelTask" },
};
const ORDER = ["APPROVE", "RUN_NOW", "RETRY", "EDIT", "SKIP", "CANCEL"];

function taskMutation(name, inputType) {
  return `mutation ($input: ${inputType}!) { ${name}(input: $input) { ${TASK_FIELDS} } }`;
}

const STATEMENT_QUERY = `query ($id: ID!) { node(id: $id) { ... on Task { statement version } } }`;

/** Runs a mutation; the refusal's message, or null once it was done. */
async function act(name, inputType, input) {
  const { errors } = await request(taskMutation(name, inputType), { input });
  return refusal(errors);
}

/**
 * A task's actions. `onDone` is called after a change was accepted (the live subscription
 * refreshes the page too; this makes the acting browser quick even without it).
 */
export function TaskActions({ task, onDone }) {
  const [open, setOpen] = useState(null); // "SKIP" | "EDIT" | null
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const [reason, setReason] = useState("");
  const [statement, setStatement] = useState(null);
  const [editedVersion, setEditedVersion] = useState(null);
  // An opened form takes the focus, so that a keyboard user types the reason or the
  // statement at once.
  const firstField = useRef(null);
  useEffect(() => firstField.current?.focus(), [open, statement !== null]);
  const actions = ORDER.filter((action) => task.availableActions.includes(action));
  if (!actions.length && !error) return null;

  const finish = (message) => {
    setBusy(false);
    setError(message);
    if (message === null) {
      setOpen(null);
      onDone?.();
    }
  };
  const simple = async (action) => {
    setBusy(true);
    const { mutation } = SIMPLE_ACTIONS[action];
    finish(await act(mutation, "TaskActionInput", { taskId: task.id, expectedVersion: task.version }));
  };
  const openEditor = async () => {
    setOpen("EDIT");
    setError(null);
    setStatement(null); // until the current statement and its version have been read
    const { data, errors } = await request(STATEMENT_QUERY, { id: task.id });
    if (errors.length) return setError(refusal(errors));
    setStatement(data.node.statement ?? "");
    setEditedVersion(data.node.version);
  };
  const skip = async (event) => {
    event.preventDefault();
    setBusy(true);
    finish(
      await act("skipTask", "SkipTaskInput", {
        taskId: task.id,
        expectedVersion: task.version,
        reason,
      }),
    );
  };
  const save = async (event) => {
    event.preventDefault();
    setBusy(true);
    // The version the statement was read at: a change made meanwhile is refused (CONFLICT),
    // not overwritten.
    finish(
      await act("updateTaskStatement", "UpdateTaskStatementInput", {
        taskId: task.id,
        expectedVersion: editedVersion,
        statement,
      }),
    );
  };

  const label = (words) => `${words}: ${task.name}`;
  return html`<div class="actions">
    ${actions.map((action) => {
      if (action === "SKIP" || action === "EDIT") {
        const words = action === "SKIP" ? "Skip…" : "Edit statement…";
        return html`<button
          type="button"
          data-action=${action}
          data-task-id=${task.id}
          aria-label=${label(words)}
          aria-expanded=${open === action}
          disabled=${busy}
          onClick=${() => (action === "EDIT" ? openEditor() : (setOpen(open ? null : "SKIP"), setError(null)))}
        >
          ${words}
        </button>`;
      }
      const { label: words } = SIMPLE_ACTIONS[action];
      return html`<button
        type="button"
        data-action=${action}
        data-task-id=${task.id}
        aria-label=${label(words)}
        disabled=${busy}
        onClick=${() => simple(action)}
      >
        ${words}
      </button>`;
    })}
    ${open === "SKIP" &&
    html`<form class="inline-form" onSubmit=${skip}>
      <label>Reason <input
        ref=${firstField}
        required
        value=${reason}
        onInput=${(event) => setReason(event.currentTarget.value)}
      /></label>
      <button type="submit" data-action="SKIP-CONFIRM" disabled=${busy}>Skip task</button>
      <button type="button" onClick=${() => setOpen(null)}>Close</button>
    </form>`}
    ${open === "EDIT" &&
    statement !== null &&
    html`<form class="inline-form" onSubmit=${save}>
      <label>Statement (version ${editedVersion})
        <textarea ref=${firstField} rows="6" value=${statement} onInput=${(event) => setStatement(event.currentTarget.value)}></textarea>
      </label>
      <button type="submit" data-action="EDIT-SAVE" disabled=${busy}>Save statement</button>
      <button type="button" onClick=${() => setOpen(null)}>Close</button>
    </form>`}
    ${error && html`<p class="refusal" role="alert" data-refusal-for=${task.id}>${error}</p>`}
  </div>`;
}

const APPROVE_STAGE = `mutation ($input: StageActionInput!) { approveStage(input: $input) { id status } }`;

/** "Approve stage", offered when one of the stage's tasks may be approved by the caller. */
export function StageActions({ stage, onDone }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const approvable = stage.tasks.some((task) => task.availableActions.includes("APPROVE"));
  if (!approvable && !error) return null;
  const approve = async () => {
    setBusy(true);
    const { errors } = await request(APPROVE_STAGE, { input: { stageId: stage.id } });
    setBusy(false);
    setError(refusal(errors));
    if (!errors.length) onDone?.();
  };
  return html`<div class="actions">
    ${approvable &&
    html`<button
      type="button"
      data-action="APPROVE_STAGE"
      data-stage-id=${stage.id}
      aria-label=${`Approve stage ${stage.name}`}
      disabled=${busy}
      onClick=${approve}
    >
      Approve stage
    </button>`}
    ${error && html`<p class="refusal" role="alert">${error}</p>`}
  </div>`;
}
