// Runs the graphql-http package's server audits against a GraphQL endpoint and prints their
// results as JSON. Usage: node graphql_http_audit.mjs INSTALL_DIR URL, with the token in
// CONVEYOR_AUDIT_TOKEN (kept out of the command line, which other users can read).
import { createRequire } from "node:module";

const [installDir, url] = process.argv.slice(2);
const token = process.env.CONVEYOR_AUDIT_TOKEN;
const { serverAudits } = createRequire(`${installDir}/`)("graphql-http");

// Every request of the audit carries the token: without it Conveyor answers 401.
function authenticatedFetch(input, init = {}) {
  const headers = new Headers(init.headers);
  headers.set("authorization", `Bearer ${token}`);
  return fetch(input, { ...init, headers });
}

const results = [];
for (const audit of serverAudits({ url, fetchFn: authenticatedFetch })) {
  const result = await audit.fn();
  const failed = result.status !== "ok";
  results.push({
    id: result.id,
    name: result.name,
    status: result.status,
    reason: failed ? result.reason : undefined,
    httpStatus: failed ? result.response.status : undefined,
    body: failed ? await result.response.text() : undefined,
  });
}
process.stdout.write(JSON.stringify(results));
