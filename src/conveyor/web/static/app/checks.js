// A task's checks: what they found, where, and what a person may do about a failure.
import { html, useState } from "./lib.js";
import { refusal, request } from "./api.js";
import { formatTime } from "./status.js";

export const CHECK_FIELDS = `
  checkStatus
  checksOverride { by at reason statementVersion }
  dryRunRequested
  checks { rule level source message line column docUrl detail createdAt }`;

const OVERRIDE = `mutation ($input: OverrideTaskChecksInput!) { overrideTaskChecks(input: $input) { id } }`;
const DRY_RUN = `mutation ($input: DryRunInput!) { dryRun(input: $input) { id } }`;

const GATE_WORDS = {
  PENDING: "checks running",
  PASSED: "checks passed",
  FAILED: "checks failed: the task will not run until the statement is fixed or a DBA overrides",
};

/** A dry run's outcome in words, from its finding's `detail`. */
function dryRunWords(detail) {
  if (!detail) return "";
  if (detail.executed === false) return " · not executed (it cannot run in a transaction)";
  if (detail.sqlstate) return ` · statement ${detail.failedStatement} failed: SQLSTATE ${detail.sqlstate}`;
  const rows = detail.rowsAffected === null || detail.rowsAffected === undefined ? "" : `, ${detail.rowsAffected} rows`;
  return ` · ran and rolled back in ${detail.durationMs} ms${rows}`;
}

function Finding({ finding }) {
  const where = finding.line ? ` (line ${finding.line}, column ${finding.column})` : "";
  return html`<li class="finding level-${finding.level.toLowerCase()}" data-rule=${finding.rule} data-level=${finding.level}>
    <strong>${finding.level.toLowerCase()}</strong>
    ${finding.docUrl ? html` <a href=${finding.docUrl} rel="noreferrer">${finding.rule}</a>` : ` ${finding.rule}`}${where}:
    ${finding.message}${finding.rule === "dry-run" ? dryRunWords(finding.detail) : ""}
  </li>`;
}

/** The checks section of a task's page. `onDone` re-reads the task after an accepted action. */
export function TaskChecks({ task, onDone }) {
  const [reason, setReason] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const run = async (document, input) => {
    setBusy(true);
    const { errors } = await request(document, { input });
    setBusy(false);
    const refused = refusal(errors);
    setError(refused);
    if (!refused) onDone?.();
  };
  const override = (event) => {
    event.preventDefault();
    run(OVERRIDE, { taskId: task.id, reason });
  };
  return html`<section class="checks" data-check-status=${task.checkStatus}>
    <h3>Checks</h3>
    <p class="check-gate">${GATE_WORDS[task.checkStatus] ?? task.checkStatus}${task.dryRunRequested ? " · dry run requested" : ""}</p>
    ${task.checksOverride &&
    html`<p class="check-override">Overridden by ${task.checksOverride.by}, ${formatTime(task.checksOverride.at)}: ${task.checksOverride.reason}</p>`}
    ${task.checks.length ? html`<ul class="findings">${task.checks.map((finding) => html`<${Finding} finding=${finding} />`)}</ul>` : html`<p>Nothing found.</p>`}
    <div class="actions">
      <button type="button" data-action="DRY_RUN" disabled=${busy || task.dryRunRequested} onClick=${() => run(DRY_RUN, { taskId: task.id })}>Dry run</button>
      ${task.checkStatus === "FAILED" &&
      !task.checksOverride &&
      html`<form class="override" onSubmit=${override}>
        <label>Reason to run it anyway <input value=${reason} onInput=${(event) => setReason(event.currentTarget.value)} /></label>
        <button type="submit" data-action="OVERRIDE_CHECKS" disabled=${busy}>Override checks</button>
      </form>`}
    </div>
    ${error && html`<p class="refusal" role="alert">${error}</p>`}
  </section>`;
}
