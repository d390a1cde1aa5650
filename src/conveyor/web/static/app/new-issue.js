// The form that opens an issue with its whole pipeline, showing the API's problems on the
// fields they name.
import { html, useEffect, useState } from "./lib.js";
import { problemsOf, refusal, request } from "./api.js";

const CHOICES_QUERY = `query Choices {
  environments(first: 100) { edges { node { id name } } }
  instances(first: 100) { edges { node { id name } } }
  databases(first: 100) { edges { node { id name instance { id } } } }
}`;
const CREATE_ISSUE = `mutation ($input: CreateIssueInput!) { createIssue(input: $input) { id } }`;
const TASK_TYPES = ["SCHEMA_UPDATE", "DATA_UPDATE", "DATABASE_CREATE", "INSTANCE_SYNC"];

const CHANGES_SCHEMA_OR_DATA = ["SCHEMA_UPDATE", "DATA_UPDATE"];

/** The fields the form shows for a task of this type. */
function taskFields(task) {
  return [
    "type",
    "name",
    "instanceId",
    task.type === "DATABASE_CREATE" ? "databaseName" : "databaseId",
    ...(CHANGES_SCHEMA_OR_DATA.includes(task.type) ? ["statement"] : []),
    "ref",
    "blockedBy",
  ];
}

const newTask = (choices) => ({
  type: "SCHEMA_UPDATE",
  instanceId: choices.instances[0]?.id ?? "",
  databaseId: "",
  databaseName: "",
  name: "",
  ref: "",
  statement: "",
  blockedBy: "",
});
const newStage = (choices) => ({ environmentId: choices.environments[0]?.id ?? "", tasks: [newTask(choices)] });

function asInput(form) {
  const optional = (value) => (value.trim() ? value.trim() : null);
  return {
    title: form.title,
    description: form.description,
    stages: form.stages.map((stage) => ({
      environmentId: optional(stage.environmentId),
      tasks: stage.tasks.map((task) => ({
        type: task.type,
        instanceId: optional(task.instanceId),
        databaseId: optional(task.databaseId),
        databaseName: task.type === "DATABASE_CREATE" ? optional(task.databaseName) : null,
        name: optional(task.name),
        ref: optional(task.ref),
        statement: CHANGES_SCHEMA_OR_DATA.includes(task.type) ? task.statement : null,
        blockedBy: task.blockedBy.split(",").map((ref) => ref.trim()).filter(Boolean),
      })),
    })),
  };
}

/** A labelled control with the problems the API named for `field` under it. */
function Field({ field, label, problems, children }) {
  const mine = problems.filter((problem) => problem.field === field);
  const id = `field-${field.replaceAll(".", "-")}`;
  return html`<div class="field ${mine.length ? "invalid" : ""}" data-field=${field}>
    <label for=${id}>${label}</label>
    ${children({ id, "aria-invalid": mine.length > 0, "aria-describedby": mine.length ? `${id}-problem` : undefined })}
    ${mine.length > 0 &&
    html`<p class="problem" id="${id}-problem" role="alert">${mine.map((problem) => problem.message).join("; ")}</p>`}
  </div>`;
}

export function NewIssueView() {
  const [choices, setChoices] = useState(null);
  const [loadError, setLoadError] = useState(null);
  const [form, setForm] = useState(null);
  const [problems, setProblems] = useState([]);
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    request(CHOICES_QUERY).then(({ data, errors }) => {
      if (!data) return setLoadError(refusal(errors));
      const loaded = {
        environments: data.environments.edges.map((edge) => edge.node),
        instances: data.instances.edges.map((edge) => edge.node),
        databases: data.databases.edges.map((edge) => edge.node),
      };
      setChoices(loaded);
      setForm({ title: "", description: "", stages: [newStage(loaded)] });
    });
  }, []);
  if (loadError) return html`<p class="refusal" role="alert">${loadError}</p>`;
  if (!form) return html`<p class="loading">Loading…</p>`;

  const update = (change) => setForm((current) => change(structuredClone(current)) ?? current);
  // The value is read at once: the event is gone by the time the update runs.
  const setField = (apply) => (event) => {
    const value = event.currentTarget.value;
    update((next) => {
      apply(next, value);
      return next;
    });
  };
  const setTask = (s, t, key) => setField((next, value) => (next.stages[s].tasks[t][key] = value));
  const submit = async (event) => {
    event.preventDefault();
    setBusy(true);
    const { data, errors } = await request(CREATE_ISSUE, { input: asInput(form) });
    setBusy(false);
    if (data?.createIssue) {
      window.location.hash = `#/issues/${encodeURIComponent(data.createIssue.id)}`;
      return;
    }
    setProblems(problemsOf(errors));
  };
  // A problem about a field the form does not show (or about no field) is shown on top.
  const shown = new Set([
    "title",
    "description",
    ...form.stages.flatMap((stage, s) => [
      `stages.${s}.environmentId`,
      ...stage.tasks.flatMap((task, t) => taskFields(task).map((key) => `stages.${s}.tasks.${t}.${key}`)),
    ]),
  ]);
  const elsewhere = problems.filter((problem) => !shown.has(problem.field));

  return html`<form class="new-issue" onSubmit=${submit} noValidate>
    <h2>Open an issue</h2>
    ${elsewhere.length > 0 && html`<div class="refusal" role="alert">${elsewhere.map((problem) => html`<p>${problem.field ? `${problem.field}: ` : ""}${problem.message}</p>`)}</div>`}
    <${Field} field="title" label="Title" problems=${problems}>
      ${(attrs) => html`<input ...${attrs} value=${form.title} onInput=${setField((next, value) => (next.title = value))} />`}
    <//>
    <${Field} field="description" label="Description" problems=${problems}>
      ${(attrs) => html`<textarea ...${attrs} rows="2" value=${form.description} onInput=${setField((next, value) => (next.description = value))}></textarea>`}
    <//>
    ${form.stages.map(
      (stage, s) => html`<fieldset class="stage-plan" key=${s}>
        <legend>Stage ${s + 1}</legend>
        <${Field} field="stages.${s}.environmentId" label="Environment" problems=${problems}>
          ${(attrs) => html`<select ...${attrs} value=${stage.environmentId} onChange=${setField((next, value) => (next.stages[s].environmentId = value))}>
            ${choices.environments.map((environment) => html`<option value=${environment.id}>${environment.name}</option>`)}
          </select>`}
        <//>
        ${stage.tasks.map(
          (task, t) => html`<fieldset class="task-plan" key=${t}>
            <legend>Task ${t + 1}</legend>
            <${Field} field="stages.${s}.tasks.${t}.type" label="Type" problems=${problems}>
              ${(attrs) => html`<select ...${attrs} value=${task.type} onChange=${setTask(s, t, "type")}>
                ${TASK_TYPES.map((type) => html`<option value=${type}>${type.toLowerCase().replace("_", " ")}</option>`)}
              </select>`}
            <//>
            <${Field} field="stages.${s}.tasks.${t}.name" label="Name (optional)" problems=${problems}>
              ${(attrs) => html`<input ...${attrs} value=${task.name} onInput=${setTask(s, t, "name")} />`}
            <//>
            <${Field} field="stages.${s}.tasks.${t}.instanceId" label="Instance" problems=${problems}>
              ${(attrs) => html`<select ...${attrs} value=${task.instanceId} onChange=${setTask(s, t, "instanceId")}>
                ${choices.instances.map((instance) => html`<option value=${instance.id}>${instance.name}</option>`)}
              </select>`}
            <//>
            ${task.type === "DATABASE_CREATE"
              ? html`<${Field} field="stages.${s}.tasks.${t}.databaseName" label="New database's name" problems=${problems}>
                  ${(attrs) => html`<input ...${attrs} value=${task.databaseName} onInput=${setTask(s, t, "databaseName")} />`}
                <//>`
              : html`<${Field} field="stages.${s}.tasks.${t}.databaseId" label="Database" problems=${problems}>
                  ${(attrs) => html`<select ...${attrs} value=${task.databaseId} onChange=${setTask(s, t, "databaseId")}>
                    <option value="">none</option>
                    ${choices.databases
                      .filter((database) => database.instance.id === task.instanceId)
                      .map((database) => html`<option value=${database.id}>${database.name}</option>`)}
                  </select>`}
                <//>`}
            ${CHANGES_SCHEMA_OR_DATA.includes(task.type) &&
            html`<${Field} field="stages.${s}.tasks.${t}.statement" label="Statement" problems=${problems}>
              ${(attrs) => html`<textarea ...${attrs} rows="4" value=${task.statement} onInput=${setTask(s, t, "statement")}></textarea>`}
            <//>`}
            <${Field} field="stages.${s}.tasks.${t}.ref" label="Ref, for other tasks' blocked-by (optional)" problems=${problems}>
              ${(attrs) => html`<input ...${attrs} value=${task.ref} onInput=${setTask(s, t, "ref")} />`}
            <//>
            <${Field} field="stages.${s}.tasks.${t}.blockedBy" label="Blocked by (refs, comma-separated)" problems=${problems}>
              ${(attrs) => html`<input ...${attrs} value=${task.blockedBy} onInput=${setTask(s, t, "blockedBy")} />`}
            <//>
            ${stage.tasks.length > 1 &&
            html`<button type="button" onClick=${() => update((next) => (next.stages[s].tasks.splice(t, 1), next))}>Remove task ${t + 1}</button>`}
          </fieldset>`,
        )}
        <button type="button" onClick=${() => update((next) => (next.stages[s].tasks.push(newTask(choices)), next))}>Add a task to stage ${s + 1}</button>
        ${form.stages.length > 1 &&
        html`<button type="button" onClick=${() => update((next) => (next.stages.splice(s, 1), next))}>Remove stage ${s + 1}</button>`}
      </fieldset>`,
    )}
    <p>
      <button type="button" onClick=${() => update((next) => (next.stages.push(newStage(choices)), next))}>Add a stage</button>
      <button type="submit" class="primary" disabled=${busy}>Open the issue</button>
    </p>
  </form>`;
}
