// The page: sign-in, who you are, and the view the address names.
import { html, render, useEffect, useState } from "./lib.js";
import { refusal, request, storeToken, storedToken } from "./api.js";
import { IssuesView } from "./issues.js";
import { NewIssueView } from "./new-issue.js";
import { PipelineView } from "./pipeline.js";
import { TaskView } from "./task.js";

const VIEWER_QUERY = `query Viewer { viewer { actor role } }`;

function route(hash) {
  const [, view, id] = hash.replace(/^#/, "").split("/");
  if (view === "issues" && id) return html`<${PipelineView} key=${id} issueId=${decodeURIComponent(id)} />`;
  if (view === "tasks" && id) return html`<${TaskView} key=${id} taskId=${decodeURIComponent(id)} />`;
  if (view === "new") return html`<${NewIssueView} />`;
  return html`<${IssuesView} />`;
}

function useHash() {
  const [hash, setHash] = useState(window.location.hash);
  useEffect(() => {
    const changed = () => setHash(window.location.hash);
    window.addEventListener("hashchange", changed);
    return () => window.removeEventListener("hashchange", changed);
  }, []);
  return hash;
}

// Edits a draft and signs in with it when the person leaves the field or presses Enter,
// as GraphiQL's field does.
function TokenField({ token, onToken }) {
  const [draft, setDraft] = useState(token);
  const commit = () => draft.trim() !== token && onToken(draft.trim());
  return html`<form class="token" onSubmit=${(event) => (event.preventDefault(), commit())}>
    <label for="conveyor-api-token">API token</label>
    <input
      id="conveyor-api-token"
      type="password"
      autocomplete="off"
      spellcheck="false"
      value=${draft}
      onInput=${(event) => setDraft(event.currentTarget.value)}
      onBlur=${commit}
    />
  </form>`;
}

function Viewer({ token }) {
  const [viewer, setViewer] = useState(null);
  useEffect(() => {
    let current = true;
    request(VIEWER_QUERY).then(({ data, errors }) => {
      if (current) setViewer(data ? data.viewer : { error: refusal(errors) });
    });
    return () => {
      current = false;
    };
  }, [token]);
  if (!viewer) return null;
  if (viewer.error) return html`<p class="viewer signed-out" role="status">Not signed in: ${viewer.error}</p>`;
  return html`<p class="viewer" role="status">
    Signed in as <strong data-actor>${viewer.actor}</strong> (<span data-role>${viewer.role}</span>)
  </p>`;
}

function App() {
  const [token, setToken] = useState(storedToken);
  const hash = useHash();
  const signIn = (next) => {
    storeToken(next);
    setToken(next);
  };
  return html`<header class="top">
      <h1><a href="#/">Conveyor</a></h1>
      <nav aria-label="Main">
        <a href="#/">Issues</a>
        <a href="#/new">Open an issue</a>
        <a href="graphql">GraphiQL</a>
      </nav>
      <${Viewer} token=${token} />
      <${TokenField} token=${token} onToken=${signIn} />
    </header>
    <main key=${token}>${route(hash)}</main>`;
}

const root = document.getElementById("app");
root.replaceChildren(); // the "Loading…" shown until the modules have arrived
render(html`<${App} />`, root);
