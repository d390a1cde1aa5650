// The GraphQL API over HTTP, with the API token a person pasted into the page.
const GRAPHQL_URL = new URL(
  document.querySelector('meta[name="conveyor-graphql"]').content,
  window.location.href,
).href;

export const WEBSOCKET_URL = GRAPHQL_URL.replace(/^http/, "ws");

// The key GraphiQL's "API token" field uses too, so that one sign-in serves both pages. It
// lives in sessionStorage: a bearer secret should go when the tab closes.
const TOKEN_KEY = "conveyor.apiToken";

export function storedToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  } catch {
    return "";
  }
}

export function storeToken(token) {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // Storage blocked by the browser: the token works until the page is reloaded.
  }
}

export function authorization() {
  const token = storedToken();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

/** Run an operation; resolves to { data, errors } and never throws. */
export async function request(query, variables = {}) {
  let response;
  try {
    response = await fetch(GRAPHQL_URL, {
      method: "POST",
      headers: {
        "Content-Type": "application/json",
        Accept: "application/graphql-response+json, application/json",
        ...authorization(),
      },
      body: JSON.stringify({ query, variables }),
    });
  } catch {
    return { data: null, errors: [{ message: "the server cannot be reached" }] };
  }
  try {
    const body = await response.json();
    return { data: body.data ?? null, errors: body.errors ?? [] };
  } catch {
    return { data: null, errors: [{ message: `the server answered HTTP ${response.status}` }] };
  }
}

/** The first error's message, for a person. */
export function refusal(errors) {
  return errors && errors.length ? errors[0].message : null;
}

/** Every problem the API named, each with the dotted path of its input field ("title",
 *  "stages.0.tasks.1.statement"), from the errors' `extensions.problems`. */
export function problemsOf(errors) {
  const problems = [];
  for (const error of errors || []) {
    const listed = error.extensions?.problems ?? [
      { message: error.message, field: error.extensions?.field ?? null },
    ];
    for (const problem of listed) {
      const path = (problem.field || []).slice(problem.field?.[0] === "input" ? 1 : 0);
      problems.push({ message: problem.message, field: path.join(".") });
    }
  }
  return problems;
}
