// Statuses as a shape and words, with colour only as a third cue.
import { html } from "./lib.js";

// Each status has its own glyph (a distinct shape) and its own words.
const STATUSES = {
  PENDING_APPROVAL: { icon: "⚑", label: "waiting for approval" },
  PENDING: { icon: "○", label: "pending" },
  RUNNING: { icon: "▶", label: "running" },
  DONE: { icon: "✔", label: "done" },
  FAILED: { icon: "✖", label: "failed" },
  CANCELED: { icon: "⊘", label: "canceled" },
  SKIPPED: { icon: "↷", label: "skipped" },
  OPEN: { icon: "◔", label: "open" },
};

export function Status({ status }) {
  const { icon, label } = STATUSES[status] ?? { icon: "?", label: status.toLowerCase() };
  return html`<span class="status status-${status.toLowerCase()}" data-status=${status}>
    <span class="status-icon" aria-hidden="true">${icon}</span>
    <span class="status-label">${label}</span>
  </span>`;
}

export function formatTime(value) {
  return value ? new Date(value).toLocaleString() : "";
}
