// Live updates over graphql-ws, and the scheduling that keeps a burst of them cheap.
import { createClient } from "./lib.js";
import { WEBSOCKET_URL, authorization, storedToken } from "./api.js";

/** WebSocket close codes of graphql-ws for a connection the server will not accept. */
const REFUSED_TOKEN = new Set([4401, 4403]);

let client = null;
let clientToken = null;

function websocketClient() {
  const token = storedToken();
  if (client === null || clientToken !== token) {
    client?.dispose();
    client = createClient({
      url: WEBSOCKET_URL,
      connectionParams: authorization(),
      lazy: true,
      keepAlive: 10_000,
      // follow() resumes itself: graphql-ws would re-send the first subscription's
      // variables, and they must carry the last sequence received instead.
      retryAttempts: 0,
    });
    clientToken = token;
  }
  return client;
}

/**
 * Follow a subscription whose messages carry `sequence`. `variablesFor(after)` gives the
 * variables: `after` is null the first time, then the last sequence received, so that a
 * dropped connection resumes without a gap. `onMessage(message)` gets each message's one
 * field; `onState(state, detail)` hears "live", "reconnecting" or "refused".
 * Returns the function that stops following.
 */
export function follow(query, variablesFor, onMessage, onState = () => {}) {
  let after = null;
  let stopped = false;
  let unsubscribe = null;
  let attempt = 0;
  let timer = 0;

  const resume = () => {
    unsubscribe = null;
    if (stopped) return;
    onState("reconnecting");
    timer = setTimeout(start, Math.min(5000, 250 * 2 ** attempt++));
  };

  function start() {
    if (stopped) return;
    unsubscribe = websocketClient().subscribe(
      { query, variables: variablesFor(after) },
      {
        next(result) {
          if (result.errors?.length) {
            onState("refused", result.errors[0].message);
            return;
          }
          attempt = 0;
          onState("live");
          const message = Object.values(result.data)[0];
          if (typeof message?.sequence === "number") {
            after = Math.max(after ?? 0, message.sequence);
          }
          onMessage(message);
        },
        error(error) {
          // A list of GraphQL errors is the server refusing the operation, and a close with
          // 4401 or 4403 the server refusing the token: trying again would be refused again.
          // Anything else is the connection going away.
          if (Array.isArray(error)) {
            unsubscribe = null;
            onState("refused", error[0]?.message ?? "refused");
          } else if (REFUSED_TOKEN.has(error?.code)) {
            unsubscribe = null;
            onState("refused", error.reason || "the API token was refused");
          } else {
            resume();
          }
        },
        complete: resume,
      },
    );
  }

  start();
  return () => {
    stopped = true;
    clearTimeout(timer);
    unsubscribe?.();
  };
}

/**
 * `fn` (async) run at most once per animation frame however often this is called, and
 * never while its previous run is still going: a call meanwhile runs it once more after.
 */
export function coalesced(fn) {
  let frame = 0;
  let running = false;
  let again = false;
  const run = async () => {
    frame = 0;
    if (running) {
      again = true;
      return;
    }
    running = true;
    try {
      await fn();
    } finally {
      running = false;
      if (again) {
        again = false;
        schedule();
      }
    }
  };
  const schedule = () => {
    if (!frame) frame = requestAnimationFrame(run);
  };
  schedule.cancel = () => {
    cancelAnimationFrame(frame);
    frame = 0;
  };
  return schedule;
}
