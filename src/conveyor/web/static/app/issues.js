// The list of issues, with filters and pages.
import { html, useEffect, useState } from "./lib.js";
import { refusal, request } from "./api.js";
import { follow } from "./live.js";
import { Status, formatTime } from "./status.js";

const PAGE_SIZE = 20;

// What changes the list, in every pipeline: it is read again when an issue opens or a status
// it shows changes, at most once per READ_AGAIN_MS however busy the cluster is.
const ACTIVITY = `subscription ($after: Int) {
  activity(kinds: [ISSUE_CREATED, PIPELINE_STATUS_CHANGED, STAGE_STATUS_CHANGED, TASK_STATUS_CHANGED], after: $after) {
    sequence
  }
}`;
const READ_AGAIN_MS = 500;

const ISSUES_QUERY = `query Issues($first: Int!, $after: String, $status: PipelineStatus, $environmentId: ID) {
  environments(first: 100) { edges { node { id name } } }
  issues(first: $first, after: $after, status: $status, environmentId: $environmentId) {
    totalCount
    pageInfo { hasNextPage endCursor }
    edges {
      node {
        id title status creator createdAt
        pipeline {
          stages { id name status environment { name } taskCounts { done skipped failed total } }
        }
      }
    }
  }
}`;

function Progress({ stages }) {
  return html`<ol class="progress" aria-label="Progress by stage">
    ${stages.map((stage) => {
      const counts = stage.taskCounts;
      const finished = counts.done + counts.skipped;
      const words = `${stage.environment.name}: ${finished} of ${counts.total} finished${counts.failed ? `, ${counts.failed} failed` : ""}`;
      return html`<li class="progress-stage status-${stage.status.toLowerCase()}" title=${words}>
        <span class="progress-bar" aria-hidden="true"><span style=${`width: ${counts.total ? (100 * finished) / counts.total : 0}%`}></span></span>
        <span class="progress-text">${words}</span>
      </li>`;
    })}
  </ol>`;
}

export function IssuesView() {
  const [status, setStatus] = useState("");
  const [environmentId, setEnvironmentId] = useState("");
  // The cursors of the pages before this one: "previous" pops one.
  const [cursors, setCursors] = useState([null]);
  const [result, setResult] = useState(null);
  const after = cursors[cursors.length - 1];
  // Bumped by the activity that changes what the list shows: each bump reads it again.
  const [changes, setChanges] = useState(0);

  useEffect(() => {
    let timer = 0;
    const stop = follow(ACTIVITY, (afterSequence) => ({ after: afterSequence }), () => {
      if (timer) return;
      timer = setTimeout(() => {
        timer = 0;
        setChanges((count) => count + 1);
      }, READ_AGAIN_MS);
    });
    return () => {
      stop();
      clearTimeout(timer);
    };
  }, []);

  useEffect(() => {
    let current = true;
    request(ISSUES_QUERY, {
      first: PAGE_SIZE,
      after,
      status: status || null,
      environmentId: environmentId || null,
    }).then((answer) => current && setResult(answer));
    return () => {
      current = false;
    };
  }, [status, environmentId, after, changes]);

  const filter = (set) => (event) => {
    set(event.currentTarget.value);
    setCursors([null]);
  };
  const data = result?.data;
  return html`<section class="issues">
    <h2>Issues</h2>
    <form class="filters" onSubmit=${(event) => event.preventDefault()}>
      <label>Status
        <select value=${status} onChange=${filter(setStatus)}>
          <option value="">any</option>
          <option value="OPEN">open</option>
          <option value="DONE">done</option>
          <option value="CANCELED">canceled</option>
        </select>
      </label>
      <label>Environment
        <select value=${environmentId} onChange=${filter(setEnvironmentId)}>
          <option value="">any</option>
          ${(data?.environments.edges ?? []).map(({ node }) => html`<option value=${node.id}>${node.name}</option>`)}
        </select>
      </label>
    </form>
    ${result && !data && html`<p class="refusal" role="alert">${refusal(result.errors)}</p>`}
    ${data &&
    html`<table class="issue-table">
        <thead><tr><th scope="col">Title</th><th scope="col">Status</th><th scope="col">Progress</th><th scope="col">Creator</th><th scope="col">Opened</th></tr></thead>
        <tbody>
          ${data.issues.edges.map(
            ({ node }) => html`<tr key=${node.id} data-issue-id=${node.id}>
              <td><a href="#/issues/${encodeURIComponent(node.id)}">${node.title}</a></td>
              <td><${Status} status=${node.status} /></td>
              <td><${Progress} stages=${node.pipeline.stages} /></td>
              <td>${node.creator}</td>
              <td>${formatTime(node.createdAt)}</td>
            </tr>`,
          )}
        </tbody>
      </table>
      <nav class="pages" aria-label="Pages">
        <button type="button" disabled=${cursors.length === 1} onClick=${() => setCursors(cursors.slice(0, -1))}>Previous page</button>
        <span>page ${cursors.length} · ${data.issues.totalCount} issues</span>
        <button type="button" disabled=${!data.issues.pageInfo.hasNextPage} onClick=${() => setCursors([...cursors, data.issues.pageInfo.endCursor])}>Next page</button>
      </nav>`}
  </section>`;
}
