/*
 * The ThingWorx stand-in console: browse the bound Things, run their services, watch jobs.
 *
 * Rules:
 * - It talks only to this origin's REST convention under /Thingworx, with the application key in
 *   the appKey header. The key comes from the key form or from "#appKey=..." in the URL (which
 *   is then removed from the address bar) and is kept in sessionStorage (this tab only).
 * - Server text is always inserted as text (textContent), never as HTML.
 * - Every request has a deadline (AbortController). The page opens one live event stream
 *   (server-sent events at /standin/events/stream), shared by the job and rollouts views, while
 *   either follows something; it closes when neither does. The job view reads GetJob once, then
 *   follows the job from the gateway Thing's AzureIotDeviceJobStatusChanged and
 *   AzureIotDeviceJobEnded. Only while the stream is unavailable does it poll GetJob, once a
 *   second, one request at a time, and it says so in the panel; it stops when the job ends or
 *   after repeated failures.
 * - Inputs are typed from the service's parameter definitions; a value that cannot be sent
 *   (JSON that does not parse, a missing required input...) is flagged and nothing is sent.
 * - Result grids keep what matters in view: the row action (Watch) at the left, then the
 *   columns of PRIMARY_COLUMNS; a wide DataShape's other columns wait behind "More columns".
 * - The job panel belongs to one Thing: picking another Thing closes it (and stops polling).
 * - The rollouts view (a Thing with AzureIotDeviceJobFindRollouts): the list, one rollout's waves
 *   (AzureIotDeviceJobGetRolloutWaves) and its pause/resume/cancel buttons. It follows the
 *   Thing's AzureIotDeviceRolloutStatusChanged and AzureIotDeviceRolloutWaveEnded events from
 *   the same stream: the shown rollout is read again (GetRollout and GetRolloutWaves) when an
 *   event of it arrives, the list on every StatusChanged. Only while the stream is unavailable
 *   does it re-read the shown rollout every 2 s while it is active. It belongs to one Thing, as
 *   the job panel does.
 * - "bound" is the stand-in's view (an agent serves the Thing); "device online" is the device
 *   twin's connectionState, read with AzureIotDeviceGetConnectionState where the Thing has it.
 */
"use strict";

(() => {
  const BASE = "/Thingworx";
  const KEY_STORAGE = "thingworx-console.appKey";
  const REQUEST_TIMEOUT_MS = 30000;
  const THINGS_REFRESH_MS = 5000;
  const JOB_POLL_MS = 1000;
  const JOB_MAX_FAILURES = 5;
  // After a terminal status change, the stream stays open this long for the job's Ended event.
  const JOB_ENDED_WAIT_MS = 5000;
  const GET_JOB = "AzureIotDeviceJobGetJob";
  const QUERY_JOB_RESULTS = "AzureIotDeviceJobQueryJobResults";
  const STATUS_CHANGED_EVENT = "AzureIotDeviceJobStatusChanged";
  const JOB_ENDED_EVENT = "AzureIotDeviceJobEnded";
  const ROLLOUT_STATUS_EVENT = "AzureIotDeviceRolloutStatusChanged";
  const ROLLOUT_WAVE_EVENT = "AzureIotDeviceRolloutWaveEnded";
  const EVENT_STREAM = "/standin/events/stream";
  const EVENTS = "/standin/events";
  const FIND_JOBS = "AzureIotDeviceJobFindJobs";
  const GET_CONNECTION_STATE = "AzureIotDeviceGetConnectionState";
  // The rollouts view (docs/rollouts.md): the gateway Thing's rollout services.
  const FIND_ROLLOUTS = "AzureIotDeviceJobFindRollouts";
  const GET_ROLLOUT = "AzureIotDeviceJobGetRollout";
  const GET_ROLLOUT_WAVES = "AzureIotDeviceJobGetRolloutWaves";
  const ROLLOUT_ACTIONS = [
    ["pause", "AzureIotDeviceJobPauseRollout", "Pause", new Set(["queued", "running"])],
    ["resume", "AzureIotDeviceJobResumeRollout", "Resume", new Set(["paused"])],
    ["cancel", "AzureIotDeviceJobCancelRollout", "Cancel", new Set(["queued", "running", "paused"])],
  ];
  const ROLLOUT_STATUSES = ["queued", "running", "paused", "completed", "aborted", "cancelled", "failed"];
  const ROLLOUT_FINAL = new Set(["completed", "aborted", "cancelled", "failed"]);
  const ROLLOUT_POLL_MS = 2000;
  const ROLLOUT_LIST_ROWS = 50;
  const ROLLOUT_WAVE_ROWS = 500;
  const ROLLOUT_COUNTERS = [
    ["deviceCount", "Devices"],
    ["succeededCount", "Succeeded"],
    ["failedCount", "Failed"],
    ["pendingCount", "Pending"],
    ["retriedCount", "Retried"],
  ];
  // The choices of the FindJobs filters (docs/services.md): shown as drop-downs, "any" not sent.
  const INPUT_CHOICES = {
    [FIND_JOBS]: {
      type: ["twinUpdate", "deviceMethod"],
      status: ["scheduled", "pending", "running", "completed", "failed", "cancelled"],
    },
  };
  // Columns shown first, in this order, when a DataShape has them; a shape with more than
  // MAX_PLAIN_COLUMNS columns shows only these until "More columns" is pressed.
  const PRIMARY_COLUMNS = [
    "deviceId", "status", "errorCode", "errorDescription", "jobId", "summary", "type",
  ];
  const MAX_PLAIN_COLUMNS = 8;
  const TERMINAL_STATUSES = new Set(["completed", "failed", "cancelled"]);
  const COUNTERS = [
    ["deviceCount", "Devices"],
    ["succeededCount", "Succeeded"],
    ["failedCount", "Failed"],
    ["runningCount", "Running"],
    ["pendingCount", "Pending"],
  ];
  const INTEGRAL_TYPES = new Set(["INTEGER", "LONG", "TIMESPAN"]);
  const NUMBER_TYPES = new Set(["NUMBER", "INTEGER", "LONG", "TIMESPAN"]);
  const JSON_TYPES = new Set(["JSON", "INFOTABLE", "LOCATION"]);
  const LONG_TEXT = 48; // longer text cells wrap; shorter ones stay on one line
  const INT32 = { min: -2147483648, max: 2147483647 };
  const HTTP_REASONS = {
    400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 413: "Payload Too Large",
    500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
    504: "Gateway Timeout",
  };

  const state = {
    key: null,
    things: [],
    thingsSignature: "",
    thing: null,
    services: [],
    service: null,
    loadToken: 0,
    callToken: 0,
    thingsTimer: null,
    job: null,
    deviceToken: 0,
    rollouts: null,
  };

  // -- small DOM helpers ----------------------------------------------------------------------

  const byId = (id) => document.getElementById(id);

  /** Build an element: attrs are attributes, except text/className/on* and a few properties. */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "text") node.textContent = String(value);
      else if (name === "className") node.className = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else if (name === "value" || name === "checked" || name === "hidden") node[name] = value;
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function showText(node, text) {
    node.textContent = text || "";
    node.hidden = !text;
  }

  const sortedFields = (defs) =>
    Object.entries(defs || {})
      .map(([key, def], index) => ({ ...def, name: def.name || key, _index: index }))
      .sort((a, b) => (a.ordinal ?? a._index) - (b.ordinal ?? b._index));

  // Integers beyond 2^53 (LONG values) keep every digit: parsed as BigInt from their source
  // text and written back as raw JSON numbers, where the browser supports it (Chromium 114+).
  const EXACT_JSON = typeof JSON.rawJSON === "function";

  function parseJson(text) {
    if (!EXACT_JSON) return JSON.parse(text);
    return JSON.parse(text, (key, value, context) =>
      typeof value === "number" && !Number.isSafeInteger(value) && context && /^-?\d+$/.test(context.source)
        ? BigInt(context.source)
        : value);
  }

  function stringifyJson(value, indent) {
    return JSON.stringify(
      value,
      (key, v) => (typeof v === "bigint" ? (EXACT_JSON ? JSON.rawJSON(v.toString()) : v.toString()) : v),
      indent,
    );
  }

  const isoUtc = (millis) => {
    const date = new Date(millis);
    return Number.isNaN(date.getTime()) ? String(millis) : date.toISOString();
  };

  // -- REST -------------------------------------------------------------------------------------

  class HttpError extends Error {
    constructor(status, reason, text) {
      super(text);
      this.status = status;
      this.reason = reason;
      this.text = text;
    }

    /** "HTTP 400 Bad Request: the text", or the network failure. */
    describe() {
      if (this.status === 0) return `${this.reason}: ${this.text}`;
      return `HTTP ${this.status} ${this.reason}${this.text ? ": " + this.text : ""}`;
    }
  }

  async function api(method, path, body) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), REQUEST_TIMEOUT_MS);
    const headers = { appKey: state.key || "", Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const started = performance.now();
    let text;
    let response;
    try {
      response = await fetch((path.startsWith("/standin/") ? "" : BASE) + path, {
        method,
        headers,
        body: body === undefined ? undefined : stringifyJson(body),
        signal: controller.signal,
        cache: "no-store",
        credentials: "omit",
      });
      text = await response.text();
    } catch (error) {
      if (error && error.name === "AbortError") {
        throw new HttpError(0, "No answer", `the stand-in did not answer within ${REQUEST_TIMEOUT_MS / 1000} s`);
      }
      throw new HttpError(0, "Network error", `the stand-in cannot be reached (${error && error.message})`);
    } finally {
      clearTimeout(timer);
    }
    const elapsed = performance.now() - started;
    if (!response.ok) {
      const reason = response.statusText || HTTP_REASONS[response.status] || "Error";
      const error = new HttpError(response.status, reason, text.trim());
      if (response.status === 401) keyRefused(error);
      throw error;
    }
    try {
      return { doc: parseJson(text), status: response.status, reason: response.statusText || "OK", elapsed };
    } catch (_) {
      throw new HttpError(response.status, "Unreadable answer", `the answer is not JSON: ${text.slice(0, 200)}`);
    }
  }

  const servicePath = (thing, service) =>
    `/Things/${encodeURIComponent(thing)}/Services/${encodeURIComponent(service)}`;

  // -- application key --------------------------------------------------------------------------

  function keyFromHash() {
    const hash = location.hash.replace(/^#/, "");
    if (!hash) return null;
    const params = new URLSearchParams(hash);
    const key = params.get("appKey");
    if (key === null) return null;
    params.delete("appKey");
    const rest = params.toString();
    // Take the key out of the address bar (and of the history entry) at once.
    history.replaceState(null, "", location.pathname + location.search + (rest ? "#" + rest : ""));
    return key;
  }

  function showKeyForm(message) {
    stopThingsRefresh();
    stopJob();
    byId("workspace").hidden = true;
    byId("key-section").hidden = false;
    byId("change-key").hidden = true;
    byId("key-state").textContent = "No application key";
    showText(byId("key-error"), message);
    const input = byId("app-key");
    input.setAttribute("aria-invalid", message ? "true" : "false");
    input.focus();
  }

  function keyRefused(error) {
    sessionStorage.removeItem(KEY_STORAGE);
    state.key = null;
    showKeyForm(`The application key was refused (${error.describe()}).`);
  }

  async function useKey(key) {
    state.key = key;
    byId("key-state").textContent = "Checking the key…";
    let things;
    try {
      things = await api("GET", "/Things");
    } catch (error) {
      if (error.status === 401) return; // keyRefused() already showed the form
      sessionStorage.setItem(KEY_STORAGE, key);
      showWorkspace();
      showText(byId("things-error"), `Cannot list the Things: ${error.describe()}`);
      return;
    }
    sessionStorage.setItem(KEY_STORAGE, key);
    showWorkspace();
    renderThings(things.doc);
  }

  function showWorkspace() {
    byId("key-section").hidden = true;
    byId("workspace").hidden = false;
    byId("change-key").hidden = false;
    byId("key-state").textContent = "Application key set";
    byId("app-key").value = "";
    startThingsRefresh();
  }

  // -- Things -----------------------------------------------------------------------------------

  function startThingsRefresh() {
    stopThingsRefresh();
    state.thingsTimer = setInterval(() => refreshThings(false), THINGS_REFRESH_MS);
  }

  function stopThingsRefresh() {
    if (state.thingsTimer !== null) clearInterval(state.thingsTimer);
    state.thingsTimer = null;
  }

  async function refreshThings(userAsked) {
    const button = byId("refresh-things");
    if (userAsked) button.disabled = true;
    try {
      const { doc } = await api("GET", "/Things");
      showText(byId("things-error"), "");
      renderThings(doc);
      refreshDeviceState();
    } catch (error) {
      if (error.status !== 401) showText(byId("things-error"), `Cannot list the Things: ${error.describe()}`);
    } finally {
      button.disabled = false;
    }
  }

  function renderThings(doc) {
    const rows = (doc.rows || []).slice().sort((a, b) => String(a.name).localeCompare(String(b.name)));
    const signature = stringifyJson(rows);
    if (signature === state.thingsSignature) return; // nothing changed: keep focus and scroll
    state.thingsSignature = signature;
    state.things = rows;
    const list = byId("things");
    const focused = document.activeElement && document.activeElement.dataset.thing;
    list.replaceChildren();
    byId("things-empty").hidden = rows.length > 0;
    for (const row of rows) {
      const connected = row.isConnected === true;
      const details = [
        connected ? `bound: an agent serves it (connection ${row.connectionId || "?"})` : "not bound: no agent serves it now",
        row.lastBind ? `last bound ${isoUtc(row.lastBind)}` : null,
        row.metadataError ? `services unknown: ${row.metadataError}` : null,
      ].filter(Boolean).join("; ");
      const button = el(
        "button",
        {
          type: "button",
          className: "item thing" + (row.name === state.thing ? " selected" : ""),
          "aria-pressed": row.name === state.thing ? "true" : "false",
          "data-testid": `thing-${row.name}`,
          "data-thing": row.name,
          "data-connected": connected ? "true" : "false",
          title: details,
          onclick: () => selectThing(row.name),
        },
        el("span", { className: "dot " + (connected ? "on" : "off"), "aria-hidden": "true" }),
        el("span", { className: "item-name", text: row.name }),
        el("span", {
          className: "badge " + (connected ? "badge-ok" : "badge-off"),
          "data-testid": "thing-state",
          text: connected ? "bound" : "offline",
        }),
      );
      list.append(el("li", {}, button));
      if (focused === row.name) button.focus();
    }
    if (state.thing === null && rows.length === 1) selectThing(rows[0].name);
    else if (state.thing !== null) renderBound();
  }

  // -- bound and device online ------------------------------------------------------------------

  /** The stand-in's view of the selected Thing: bound (an agent serves it) or not. */
  function renderBound() {
    const row = state.things.find((r) => r.name === state.thing);
    const bound = Boolean(row && row.isConnected === true);
    const badge = byId("bound-state");
    badge.textContent = bound ? "bound" : "not bound";
    badge.className = "badge " + (bound ? "badge-ok" : "badge-off");
    badge.dataset.bound = bound ? "true" : "false";
    badge.title = bound ? "An agent serves this Thing (the stand-in's view)" : "No agent serves this Thing now";
    byId("thing-status").hidden = false;
  }

  /** The device's own state (twin connectionState), when the Thing has the service for it. */
  async function refreshDeviceState() {
    const badge = byId("device-state");
    const thing = state.thing;
    if (thing === null || !state.services.some((s) => s.name === GET_CONNECTION_STATE)) {
      badge.hidden = true;
      return;
    }
    const token = ++state.deviceToken;
    let text;
    let kind;
    let title;
    let value;
    try {
      const { doc } = await api("POST", servicePath(thing, GET_CONNECTION_STATE), {});
      const row = (doc.rows || [])[0] || {};
      value = String(row.connectionState || "unknown");
      const online = value === "Connected";
      text = online ? "device online" : "device offline";
      kind = online ? "badge-ok" : "badge-off";
      title = `IoT Hub twin: connectionState ${value}` +
        (row.lastActivityTime ? `, last activity ${isoUtc(row.lastActivityTime)}` : "");
    } catch (error) {
      if (error.status === 401) return;
      value = "unknown";
      text = "device state unknown";
      kind = "badge-warn";
      title = `${GET_CONNECTION_STATE} failed: ${error.describe()}`;
    }
    if (token !== state.deviceToken || thing !== state.thing) return;
    badge.textContent = text;
    badge.className = "badge " + kind;
    badge.title = title;
    badge.dataset.connectionState = value;
    badge.hidden = false;
  }

  async function selectThing(name) {
    state.thing = name;
    state.service = null;
    state.services = [];
    const token = ++state.loadToken;
    for (const button of byId("things").querySelectorAll("button.thing")) {
      const selected = button.dataset.thing === name;
      button.classList.toggle("selected", selected);
      button.setAttribute("aria-pressed", selected ? "true" : "false");
    }
    byId("services").replaceChildren();
    showText(byId("services-error"), "");
    showText(byId("services-hint"), `Loading the services of ${name}…`);
    state.deviceToken += 1;
    byId("device-state").hidden = true;
    renderBound();
    if (state.job && state.job.thing !== name) closeJob();
    if (state.rollouts && state.rollouts.thing !== name) closeRollouts();
    byId("open-rollouts").hidden = true;
    clearCall();
    let answer;
    try {
      answer = await api("GET", `/Things/${encodeURIComponent(name)}/ServiceDefinitions`);
    } catch (error) {
      if (token !== state.loadToken) return;
      showText(byId("services-hint"), "");
      showText(byId("services-error"), `Cannot load the services of ${name}: ${error.describe()}`);
      return;
    }
    if (token !== state.loadToken) return;
    state.services = (answer.doc.rows || []).map((row) => ({
      name: row.name,
      description: row.description || "",
      inputs: sortedFields(row.parameterDefinitions),
      resultType: row.resultType || {},
    }));
    renderServices();
    byId("open-rollouts").hidden = !state.services.some((s) => s.name === FIND_ROLLOUTS);
    refreshDeviceState();
  }

  function renderServices() {
    const filter = byId("service-filter").value.trim().toLowerCase();
    const list = byId("services");
    list.replaceChildren();
    const shown = state.services.filter((s) => !filter || s.name.toLowerCase().includes(filter));
    if (state.thing === null) showText(byId("services-hint"), "Select a Thing to see its services.");
    else if (state.services.length === 0) showText(byId("services-hint"), `${state.thing} has no services.`);
    else showText(byId("services-hint"), `${shown.length} of ${state.services.length} services of ${state.thing}`);
    for (const service of shown) {
      list.append(
        el(
          "li",
          {},
          el(
            "button",
            {
              type: "button",
              className: "item service" + (state.service === service.name ? " selected" : ""),
              "aria-pressed": state.service === service.name ? "true" : "false",
              "data-testid": `service-${service.name}`,
              "data-service": service.name,
              title: service.description,
              onclick: () => selectService(service.name),
            },
            el("span", { className: "item-name", text: service.name }),
            el("span", { className: "badge badge-type", text: resultLabel(service.resultType) }),
          ),
        ),
      );
    }
  }

  const resultLabel = (resultType) =>
    (resultType.aspects && resultType.aspects.dataShape) || resultType.baseType || "?";

  // -- service form -----------------------------------------------------------------------------

  function clearCall() {
    byId("call-title").textContent = state.thing ? `${state.thing}: no service selected` : "No service selected";
    byId("call-hint").hidden = false;
    byId("call").replaceChildren();
    byId("result").replaceChildren();
  }

  function selectService(name) {
    const service = state.services.find((s) => s.name === name);
    if (!service) return;
    state.service = name;
    renderServices();
    byId("call-title").textContent = `${state.thing} · ${service.name}`;
    byId("call-hint").hidden = true;
    byId("result").replaceChildren();
    byId("call").replaceChildren(buildForm(state.thing, service));
    const first = byId("call").querySelector("input, textarea, button[type=submit]");
    if (first) first.focus();
  }

  function buildForm(thing, service) {
    const controls = [];
    const form = el("form", {
      className: "service-form",
      "data-testid": "service-form",
      "data-service": service.name,
      novalidate: true,
      "aria-label": `Inputs of ${service.name}`,
    });
    if (service.description) form.append(el("p", { className: "description", text: service.description }));
    const fields = el("div", { className: "fields" });
    if (service.inputs.length === 0) fields.append(el("p", { className: "hint", text: "This service takes no inputs." }));
    service.inputs.forEach((def, index) => {
      const choices = (INPUT_CHOICES[service.name] || {})[def.name];
      const control = buildInput(def, `input-${index}`, choices);
      controls.push(control);
      fields.append(control.wrapper);
    });
    form.append(fields);
    const summary = el("p", { className: "error-text", role: "alert", "data-testid": "form-error", hidden: true });
    const run = el("button", { type: "submit", "data-testid": "run", className: "primary" }, "Run ", service.name);
    const result = resultLabel(service.resultType);
    form.append(
      el("div", { className: "form-actions" },
        run,
        el("span", { className: "hint" }, "Result: ", el("code", { text: result })),
        summary),
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      runService(thing, service, controls, run, summary);
    });
    return form;
  }

  function buildInput(def, id, choices) {
    const baseType = String(def.baseType || "STRING").toUpperCase();
    const aspects = def.aspects || {};
    const required = aspects.isRequired === true;
    const hasDefault = Object.prototype.hasOwnProperty.call(aspects, "defaultValue") && aspects.defaultValue !== null;
    const defaultValue = aspects.defaultValue;
    const hintId = `${id}-hint`;
    const errorId = `${id}-error`;
    const describedBy = [def.description ? hintId : null, errorId].filter(Boolean).join(" ");
    const common = {
      id,
      name: def.name,
      "data-testid": `input-${def.name}`,
      "data-base-type": baseType,
      "aria-describedby": describedBy,
      "aria-required": required ? "true" : "false",
    };
    let kind;
    let input;
    if (choices && baseType === "STRING") {
      kind = "choice";
      input = el("select", common,
        el("option", { value: "", text: required ? "(choose)" : "(any: not sent)" }),
        ...choices.map((choice) => el("option", { value: choice, text: choice })));
      if (hasDefault) input.value = String(defaultValue);
    } else if (baseType === "BOOLEAN") {
      kind = "boolean";
      input = el("input", { ...common, type: "checkbox" });
      if (hasDefault) input.checked = defaultValue === true || defaultValue === "true";
      else if (!required) {
        // Unset until the user clicks it: an optional input without a default is not sent.
        input.indeterminate = true;
        input.dataset.unset = "true";
        input.addEventListener("change", () => { delete input.dataset.unset; }, { once: true });
      }
    } else if (NUMBER_TYPES.has(baseType)) {
      kind = INTEGRAL_TYPES.has(baseType) ? "integer" : "number";
      input = el("input", {
        ...common,
        type: "number",
        step: kind === "integer" ? "1" : "any",
        inputmode: kind === "integer" ? "numeric" : "decimal",
        min: baseType === "INTEGER" ? INT32.min : undefined,
        max: baseType === "INTEGER" ? INT32.max : undefined,
      });
      if (hasDefault) input.value = String(defaultValue);
    } else if (baseType === "DATETIME") {
      kind = "datetime";
      input = el("input", { ...common, type: "datetime-local", step: "1" });
      if (hasDefault) input.value = datetimeLocalValue(defaultValue);
    } else if (JSON_TYPES.has(baseType)) {
      kind = "json";
      input = el("textarea", { ...common, rows: "4", spellcheck: "false", className: "mono" });
      if (hasDefault) input.value = stringifyJson(defaultValue, 2);
      input.placeholder = baseType === "INFOTABLE" ? '{"dataShape": {"fieldDefinitions": {}}, "rows": []}' : "JSON, e.g. {\"key\": 1}";
    } else {
      kind = "text";
      input = el("input", { ...common, type: "text", spellcheck: "false" });
      if (hasDefault) input.value = String(defaultValue);
    }
    if (required) input.required = true;
    const label = el("label", { for: id },
      el("span", { className: "input-name", text: def.name }),
      required ? el("span", { className: "required", title: "required", "aria-hidden": "true", text: "*" }) : null,
      required ? el("span", { className: "visually-hidden", text: " (required)" }) : null,
      el("span", { className: "badge badge-type", "aria-hidden": "true", text: baseType + (kind === "datetime" ? " (UTC)" : "") }),
    );
    const error = el("p", { id: errorId, className: "field-error", role: "alert", "data-testid": `input-error-${def.name}`, hidden: true });
    const wrapper = el("div", {
      className: "field field-" + kind + (required ? " is-required" : ""),
      "data-testid": `field-${def.name}`,
      "data-required": required ? "true" : "false",
    },
      label,
      kind === "boolean" ? el("div", { className: "checkbox-row" }, input, el("span", { className: "hint", text: booleanHint(input) })) : input,
      def.description ? el("p", { id: hintId, className: "hint", text: def.description }) : null,
      error,
    );
    if (kind === "boolean") input.addEventListener("change", () => { wrapper.querySelector(".checkbox-row .hint").textContent = booleanHint(input); });
    return { def, baseType, kind, input, error, required, wrapper };
  }

  function booleanHint(input) {
    if (input.dataset.unset === "true") return "not set (not sent)";
    return input.checked ? "true" : "false";
  }

  /** A DATETIME default (epoch ms or ISO text) as a datetime-local value, in UTC. */
  function datetimeLocalValue(value) {
    const date = new Date(typeof value === "number" ? value : String(value));
    if (Number.isNaN(date.getTime())) return "";
    return date.toISOString().slice(0, 19);
  }

  /** The typed value of one input: {skip: true}, {value}, or {error}. */
  function readInput(control) {
    const { input, kind, baseType, required } = control;
    if (kind === "boolean") {
      if (input.dataset.unset === "true") return { skip: true };
      return { value: input.checked };
    }
    const raw = input.value;
    if (kind === "number" || kind === "integer") {
      if (input.validity && input.validity.badInput) return { error: "not a number" };
      const text = raw.trim();
      if (text === "") return required ? { error: "required" } : { skip: true };
      if (kind === "integer") {
        if (!/^[-+]?\d+$/.test(text)) return { error: `a whole number is needed (${baseType})` };
        if (baseType === "INTEGER" && (Number(text) < INT32.min || Number(text) > INT32.max)) {
          return { error: `out of the INTEGER range ${INT32.min}..${INT32.max}` };
        }
        const number = Number(text);
        // A LONG beyond 2^53 goes as a BigInt, written as its exact digits.
        return { value: Number.isSafeInteger(number) ? number : BigInt(text.replace(/^\+/, "")) };
      }
      const number = Number(text);
      if (!Number.isFinite(number)) return { error: "not a finite number" };
      return { value: number };
    }
    if (kind === "datetime") {
      if (raw === "") return required ? { error: "required (a UTC date and time)" } : { skip: true };
      const iso = (raw.length === 16 ? raw + ":00" : raw) + "Z";
      if (Number.isNaN(Date.parse(iso))) return { error: "not a valid date and time" };
      return { value: iso };
    }
    if (kind === "json") {
      if (raw.trim() === "") return required ? { error: "required (JSON)" } : { skip: true };
      try {
        return { value: parseJson(raw) };
      } catch (error) {
        return { error: `not valid JSON: ${error.message}` };
      }
    }
    if (raw === "") return required ? { error: "required" } : { skip: true };
    return { value: raw };
  }

  async function runService(thing, service, controls, runButton, summary) {
    const inputs = {};
    let firstInvalid = null;
    for (const control of controls) {
      const outcome = readInput(control);
      showText(control.error, outcome.error ? `${control.def.name}: ${outcome.error}` : "");
      control.input.setAttribute("aria-invalid", outcome.error ? "true" : "false");
      control.wrapper.classList.toggle("invalid", Boolean(outcome.error));
      if (outcome.error) firstInvalid = firstInvalid || control.input;
      else if (!outcome.skip) inputs[control.def.name] = outcome.value;
    }
    if (firstInvalid) {
      showText(summary, "Nothing was sent: fix the marked inputs.");
      firstInvalid.focus();
      return;
    }
    showText(summary, "");
    const token = ++state.callToken;
    const resultBox = byId("result");
    resultBox.setAttribute("aria-busy", "true");
    resultBox.replaceChildren(el("p", { className: "hint", "data-testid": "result-running", text: `Running ${service.name}…` }));
    runButton.disabled = true;
    try {
      const answer = await api("POST", servicePath(thing, service.name), inputs);
      if (token !== state.callToken) return;
      resultBox.replaceChildren(renderResult(thing, service.name, answer, inputs));
    } catch (error) {
      if (token !== state.callToken) return;
      resultBox.replaceChildren(renderError(service.name, error));
    } finally {
      runButton.disabled = false;
      resultBox.removeAttribute("aria-busy");
    }
  }

  // -- results ----------------------------------------------------------------------------------

  function renderError(what, error) {
    return el("div", { className: "error-box", role: "alert", "data-testid": "error" },
      el("strong", { "data-testid": "error-status", text: error.status ? `HTTP ${error.status} ${error.reason}` : error.reason }),
      el("span", { "data-testid": "error-message", className: "error-message", text: error.text || "(no message)" }),
      el("span", { className: "hint", text: `${what} failed.` }),
    );
  }

  function renderResult(thing, serviceName, answer, inputs) {
    const doc = answer.doc || {};
    const rows = doc.rows || [];
    const box = el("div", { className: "result-ok" });
    const order = serviceName === FIND_JOBS ? " · newest first" : "";
    box.append(el("p", { className: "result-status", "data-testid": "result-status" },
      el("span", { className: "badge badge-ok", text: `HTTP ${answer.status} ${answer.reason}` }),
      ` ${serviceName} · ${rows.length} row${rows.length === 1 ? "" : "s"}${order} · ${Math.round(answer.elapsed)} ms`,
    ));
    const maxRows = inputs ? Number(inputs.maxRows) : NaN;
    if (Number.isFinite(maxRows) && maxRows > 0 && rows.length >= maxRows) {
      box.append(el("p", {
        className: "hint limited",
        "data-testid": "result-limited",
        text: `Only the first ${rows.length} rows (maxRows ${maxRows})${order ? ": the newest jobs" : ""}; raise maxRows or narrow the filters to see more.`,
      }));
    }
    const fields = sortedFields(doc.dataShape && doc.dataShape.fieldDefinitions);
    const watchable = fields.some((f) => f.name === "jobId") && fields.some((f) => f.name === "status");
    box.append(renderTable(doc, {
      testid: "result-grid",
      caption: `Result of ${serviceName}`,
      action: watchable ? {
        label: "Job",
        build: (row) => row.jobId ? el("button", {
          type: "button",
          className: "small",
          "data-testid": "watch-job",
          "data-job-id": row.jobId,
          "aria-label": `Watch job ${row.jobId}`,
          onclick: () => watchJob(thing, String(row.jobId)),
        }, "Watch") : null,
      } : null,
    }));
    box.append(el("details", { className: "raw" },
      el("summary", { text: "Raw InfoTable JSON" }),
      el("pre", { className: "mono", "data-testid": "result-raw", text: stringifyJson(doc, 2) }),
    ));
    return box;
  }

  /** The columns of a grid: PRIMARY_COLUMNS first (in that order), then the rest in ordinal
   *  order; a shape wider than MAX_PLAIN_COLUMNS marks the rest as "more" (hidden at first). */
  function gridColumns(fields) {
    const primary = PRIMARY_COLUMNS.map((name) => fields.find((f) => f.name === name)).filter(Boolean);
    const rest = fields.filter((f) => !PRIMARY_COLUMNS.includes(f.name));
    const folds = fields.length > MAX_PLAIN_COLUMNS && primary.length > 0;
    return [...primary.map((f) => ({ field: f, more: false })), ...rest.map((f) => ({ field: f, more: folds }))];
  }

  /** An InfoTable as a table: the row action at the left, then the columns of gridColumns(). */
  function renderTable(doc, options) {
    const fields = sortedFields(doc.dataShape && doc.dataShape.fieldDefinitions);
    const rows = doc.rows || [];
    if (fields.length === 0 && rows.length === 0) {
      return el("p", { className: "hint", "data-testid": options.testid, text: "The service returned nothing." });
    }
    const columns = gridColumns(fields);
    const more = columns.filter((c) => c.more).length;
    const head = el("tr", {});
    if (options.action) head.append(el("th", { scope: "col", className: "action", text: options.action.label }));
    for (const { field: f, more: isMore } of columns) {
      head.append(el("th", { scope: "col", "data-col": f.name, className: isMore ? "more-col" : null, title: f.description || null },
        el("span", { className: "col-name", text: f.name }),
        el("span", { className: "col-type", text: f.baseType || "" })));
    }
    const body = el("tbody");
    for (const row of rows) {
      const tr = el("tr", { "data-testid": `${options.testid}-row` });
      if (options.action) tr.append(el("td", { className: "action" }, options.action.build(row)));
      for (const { field: f, more: isMore } of columns) {
        const value = row[f.name];
        const long = typeof value === "string" && value.length > LONG_TEXT;
        const classes = [long ? "long" : null, isMore ? "more-col" : null].filter(Boolean).join(" ");
        tr.append(el("td", { "data-col": f.name, "data-base-type": f.baseType || "", className: classes || null }, cellNode(f, value)));
      }
      body.append(tr);
    }
    if (rows.length === 0) {
      body.append(el("tr", {}, el("td", { colspan: String(columns.length + (options.action ? 1 : 0)), className: "hint", text: "No rows." })));
    }
    const table = el("table", { className: "grid", "data-testid": options.testid },
      el("caption", { className: "visually-hidden", text: options.caption }),
      el("thead", {}, head),
      body);
    const wrap = el("div", { className: "grid-wrap" + (more ? " folded" : ""), "data-testid": `${options.testid}-wrap` }, table);
    if (!more) return wrap;
    const toggle = el("button", {
      type: "button",
      className: "secondary small",
      "data-testid": `${options.testid}-more-columns`,
      "aria-expanded": "false",
      onclick: () => {
        const folded = wrap.classList.toggle("folded");
        toggle.setAttribute("aria-expanded", folded ? "false" : "true");
        toggle.textContent = folded ? `More columns (${more})` : "Fewer columns";
      },
    }, `More columns (${more})`);
    return el("div", { className: "grid-box" }, el("div", { className: "grid-tools" }, toggle), wrap);
  }

  function cellNode(field, value) {
    if (value === null || value === undefined) return el("span", { className: "empty", "aria-label": "empty", text: "—" });
    const baseType = String(field.baseType || "").toUpperCase();
    if (baseType === "DATETIME") {
      return el("time", { dateTime: isoUtc(value), text: typeof value === "number" ? isoUtc(value) : String(value) });
    }
    if (baseType === "INFOTABLE" && value && typeof value === "object" && value.dataShape) {
      return renderTable(value, { testid: "nested-grid", caption: field.name, action: null });
    }
    if (baseType === "JSON" || baseType === "LOCATION" || typeof value === "object") {
      return el("pre", { className: "mono json", text: stringifyJson(value, 2) });
    }
    return document.createTextNode(String(value));
  }

  // -- the live event stream: one per page, shared by the job and rollouts views ---------------

  // state: "connecting", "open" or "interrupted" (the browser reconnects by itself).
  const events = { source: null, state: "closed", subscribers: new Set() };

  /**
   * Follow the stand-in's events: sub.open(first) when the stream is (again) open, sub.event(fired)
   * for each event, sub.down(closed, why) when it is interrupted (closed: given up, and the
   * subscription with it). The stream is opened for the first subscriber.
   */
  function subscribeEvents(sub) {
    sub.opened = false;
    if (typeof EventSource !== "function") {
      sub.down(true, "this browser has no EventSource");
      return;
    }
    events.subscribers.add(sub);
    if (events.source === null) openEvents();
    else if (events.state === "open") {
      sub.opened = true;
      sub.open(true);
    } else if (events.state === "interrupted") sub.down(false);
  }

  /** Stop following; the stream closes with its last subscriber. */
  function unsubscribeEvents(sub) {
    events.subscribers.delete(sub);
    if (events.subscribers.size === 0 && events.source !== null) {
      events.source.close();
      events.source = null;
      events.state = "closed";
    }
  }

  function openEvents() {
    // EventSource cannot send headers: the key goes as the appKey query parameter (same origin).
    const source = new EventSource(`${EVENT_STREAM}?appKey=${encodeURIComponent(state.key || "")}`);
    events.source = source;
    events.state = "connecting";
    source.onopen = () => {
      if (events.source !== source) return;
      events.state = "open";
      for (const sub of [...events.subscribers]) {
        const first = !sub.opened;
        sub.opened = true;
        sub.open(first);
      }
    };
    source.onmessage = (message) => {
      if (events.source !== source) return;
      let fired;
      try {
        fired = JSON.parse(message.data);
      } catch {
        return; // not an event of ours
      }
      for (const sub of [...events.subscribers]) sub.event(fired);
    };
    source.onerror = () => {
      if (events.source !== source) return;
      const closed = source.readyState === EventSource.CLOSED;
      events.state = "interrupted";
      const subscribers = [...events.subscribers];
      if (closed) {
        events.source = null;
        events.state = "closed";
        events.subscribers.clear();
      }
      for (const sub of subscribers) sub.down(closed);
    };
  }

  // -- job view ---------------------------------------------------------------------------------

  function stopJob() {
    const job = state.job;
    if (job && job.timer !== null) clearTimeout(job.timer);
    if (job) closeStream(job);
    state.job = null;
  }

  /** Stop watching and take the job panel away (another Thing was picked). */
  function closeJob() {
    stopJob();
    const panel = byId("job-panel");
    panel.replaceChildren();
    panel.hidden = true;
    delete panel.dataset.jobId;
    panel.dataset.state = "closed";
  }

  function watchJob(thing, jobId) {
    stopJob();
    const panel = byId("job-panel");
    const job = {
      thing, jobId, timer: null, polls: 0, events: 0, failures: 0, done: false, nodes: {},
      sub: null, live: false, lastSeq: 0, eventThing: null, row: null,
    };
    state.job = job;
    const n = job.nodes;
    n.status = el("span", { className: "badge status", "data-testid": "job-status", text: "…" });
    n.bar = el("div", {
      className: "bar",
      role: "progressbar",
      "aria-label": "Devices processed",
      "aria-valuemin": "0",
      "data-testid": "job-progress",
    }, n.ok = el("span", { className: "bar-ok", "data-testid": "job-bar-ok" }),
    n.fail = el("span", { className: "bar-fail", "data-testid": "job-bar-fail" }));
    n.progressText = el("p", { className: "progress-text", "data-testid": "job-progress-text", text: "Waiting for the first answer…" });
    n.summary = el("p", { className: "job-summary", "data-testid": "job-summary", hidden: true });
    n.counters = {};
    const counters = el("dl", { className: "counters" });
    for (const [name, label] of COUNTERS) {
      n.counters[name] = el("dd", { "data-testid": `job-${name}`, text: "–" });
      counters.append(el("div", { className: "counter counter-" + name }, el("dt", { text: label }), n.counters[name]));
    }
    n.details = el("dl", { className: "job-details", "data-testid": "job-details" });
    n.updated = el("p", { className: "hint", "data-testid": "job-updated" });
    n.source = el("p", { className: "hint job-source", "data-testid": "job-source", "aria-live": "polite" });
    n.error = el("p", { className: "error-text", role: "alert", "data-testid": "job-error", hidden: true });
    n.load = el("button", { type: "button", "data-testid": "load-results", className: "primary", hidden: true, onclick: () => loadJobResults(job) }, "Load per-device results");
    n.stop = el("button", { type: "button", "data-testid": "stop-watching", className: "secondary", onclick: () => stopWatching(job) }, "Stop watching");
    n.resume = el("button", { type: "button", "data-testid": "resume-watching", className: "secondary", hidden: true, onclick: () => resumeWatching(job) }, "Resume");
    n.results = el("div", { className: "job-results", "data-testid": "job-results-box", "aria-live": "polite" });
    panel.replaceChildren(
      el("div", { className: "panel-head" },
        el("h3", { id: "job-title", tabindex: "-1" }, "Job ", el("code", { "data-testid": "job-id", text: jobId }), ` on ${thing}`),
        n.status),
      n.bar,
      n.progressText,
      n.summary,
      counters,
      n.details,
      n.updated,
      n.source,
      n.error,
      el("div", { className: "form-actions" }, n.load, n.stop, n.resume),
      n.results,
    );
    panel.hidden = false;
    panel.dataset.jobId = jobId;
    panel.dataset.state = "watching";
    panel.scrollIntoView({ block: "nearest" });
    byId("job-title").focus({ preventScroll: true });
    followJob(job);
  }

  // -- following a job: live events first, polling only without them ------------------------

  /** Follow the page's event stream, then read GetJob once; poll only while it is down. */
  function followJob(job) {
    setSource(job, "connecting", "Connecting to the live event stream…");
    const sub = {
      open: (first) => {
        if (state.job !== job) return;
        job.live = true;
        if (job.timer !== null) clearTimeout(job.timer);
        job.timer = null;
        setSource(job, "events", "Live: following the job from pushed events (no polling).");
        if (first) readOnce(job);
        else catchUp(job);
      },
      event: (fired) => {
        if (state.job === job) applyEvent(job, fired);
      },
      down: (closed, why) => {
        if (state.job !== job || job.done) return;
        job.live = false;
        if (closed) closeStream(job);
        setSource(job, "polling", closed
          ? `Live events unavailable (${why || "the stand-in refused the event stream"}): polling GetJob every second.`
          : "Live events interrupted (reconnecting): polling GetJob every second meanwhile.");
        if (job.timer === null && !job.stopped) pollJob(job);
      },
    };
    job.sub = sub;
    subscribeEvents(sub);
  }

  function closeStream(job) {
    if (job.endTimer !== undefined) clearTimeout(job.endTimer);
    if (job.sub) unsubscribeEvents(job.sub);
    job.sub = null;
    job.live = false;
  }

  function setSource(job, source, text) {
    job.nodes.source.textContent = text;
    job.nodes.source.dataset.source = source;
    byId("job-panel").dataset.source = source;
  }

  /** The first GetJob read, the job's state before any event (an event seen first wins). */
  async function readOnce(job) {
    try {
      const { doc } = await api("POST", servicePath(job.thing, GET_JOB), { jobId: job.jobId });
      if (state.job !== job) return;
      const row = (doc.rows || [])[0];
      if (!row) throw new HttpError(200, "OK", `${GET_JOB} returned no row for job ${job.jobId}`);
      job.polls += 1;
      if (job.row === null) updateJob(job, row);
    } catch (error) {
      if (state.job !== job) return;
      const describe = error instanceof HttpError ? error.describe() : String(error);
      showText(job.nodes.error, `${GET_JOB} failed: ${describe} (waiting for events)`);
    }
  }

  /** After the stream reconnects: the events fired meanwhile, from /standin/events. */
  async function catchUp(job) {
    if (job.eventThing === null) return readOnce(job);
    try {
      const { doc } = await api("GET", `${EVENTS}?thing=${encodeURIComponent(job.eventThing)}&after=${job.lastSeq}`);
      for (const fired of doc.events || []) applyEvent(job, fired);
    } catch (error) {
      if (state.job !== job) return;
      const describe = error instanceof HttpError ? error.describe() : String(error);
      showText(job.nodes.error, `Catching up on events failed: ${describe}`);
    }
  }

  /** One fired event: a status row of this job updates the view; anything else is ignored. */
  function applyEvent(job, fired) {
    if (!fired || (fired.event !== STATUS_CHANGED_EVENT && fired.event !== JOB_ENDED_EVENT)) return;
    const row = ((fired.data && fired.data.rows) || [])[0];
    if (!row || String(row.jobId) !== job.jobId) return;
    if (typeof fired.seq === "number") {
      if (fired.seq <= job.lastSeq) return;
      job.lastSeq = fired.seq;
    }
    job.eventThing = fired.thing || job.eventThing;
    job.events += 1;
    showText(job.nodes.error, "");
    // AzureIotDeviceJobEnded carries a summary row: keep what it does not say from the last row.
    const merged = fired.event === JOB_ENDED_EVENT
      ? { ...(job.row || {}), runningCount: 0, pendingCount: 0, ...row }
      : row;
    updateJob(job, merged);
    if (fired.event === JOB_ENDED_EVENT) closeStream(job);
  }

  function stopWatching(job) {
    if (state.job !== job) return;
    if (job.timer !== null) clearTimeout(job.timer);
    job.timer = null;
    closeStream(job);
    job.stopped = true;
    byId("job-panel").dataset.state = "stopped";
    job.nodes.stop.hidden = true;
    job.nodes.resume.hidden = job.done;
  }

  function resumeWatching(job) {
    if (state.job !== job) return;
    job.stopped = false;
    job.failures = 0;
    byId("job-panel").dataset.state = "watching";
    job.nodes.stop.hidden = false;
    job.nodes.resume.hidden = true;
    followJob(job);
  }

  async function pollJob(job) {
    job.timer = null;
    if (state.job !== job || job.done || job.stopped || job.live) return;
    try {
      const { doc } = await api("POST", servicePath(job.thing, GET_JOB), { jobId: job.jobId });
      if (state.job !== job) return;
      const row = (doc.rows || [])[0];
      if (!row) throw new HttpError(200, "OK", `${GET_JOB} returned no row for job ${job.jobId}`);
      job.failures = 0;
      job.polls += 1;
      showText(job.nodes.error, "");
      updateJob(job, row);
    } catch (error) {
      if (state.job !== job) return;
      job.failures += 1;
      const describe = error instanceof HttpError ? error.describe() : String(error);
      showText(job.nodes.error, `${GET_JOB} failed: ${describe}`);
      if (job.failures >= JOB_MAX_FAILURES) {
        job.nodes.error.textContent += ` (stopped after ${JOB_MAX_FAILURES} failures in a row)`;
        stopWatching(job);
        return;
      }
    }
    if (state.job === job && !job.done && !job.stopped && !job.live) {
      job.timer = setTimeout(() => pollJob(job), JOB_POLL_MS);
    }
  }

  function updateJob(job, row) {
    const n = job.nodes;
    job.row = row;
    const status = String(row.status || "unknown");
    n.status.textContent = status;
    n.status.className = "badge status status-" + status.replace(/[^a-z]/gi, "");
    for (const [name] of COUNTERS) n.counters[name].textContent = row[name] === null || row[name] === undefined ? "–" : String(row[name]);
    const total = Number(row.deviceCount) || 0;
    const succeeded = Number(row.succeededCount) || 0;
    const failed = Number(row.failedCount) || 0;
    const done = succeeded + failed;
    const terminal = TERMINAL_STATUSES.has(status);
    // A job that ended failed or cancelled: the devices it never processed count as failed.
    const endedBadly = terminal && status !== "completed";
    if (total > 0) {
      const share = Math.min(1, done / total);
      const okShare = Math.min(succeeded, total) / total;
      const failShare = endedBadly ? 1 - okShare : Math.min(failed, total - Math.min(succeeded, total)) / total;
      n.bar.setAttribute("aria-valuemax", String(total));
      n.bar.setAttribute("aria-valuenow", String(done));
      n.bar.setAttribute("aria-valuetext", `${done} of ${total} devices processed: ${succeeded} succeeded, ${failed} failed`);
      n.bar.classList.remove("indeterminate");
      n.ok.style.width = `${100 * okShare}%`;
      n.fail.style.width = `${100 * failShare}%`;
      n.bar.dataset.outcome = failShare > 0 ? (okShare > 0 ? "partial" : "failed") : (okShare > 0 ? "ok" : "none");
      n.progressText.textContent = `${done} of ${total} devices processed (${Math.round(share * 100)} %)`;
    } else {
      n.bar.removeAttribute("aria-valuenow");
      n.bar.setAttribute("aria-valuemax", "1");
      n.bar.setAttribute("aria-valuetext", terminal ? `${status}, no device` : "not started");
      n.bar.classList.toggle("indeterminate", !terminal);
      // No device: never a green bar; red when the job failed or was cancelled, grey otherwise.
      n.ok.style.width = "0%";
      n.fail.style.width = endedBadly ? "100%" : "0%";
      n.bar.dataset.outcome = endedBadly ? "failed" : "none";
      n.progressText.textContent = terminal ? "No device was part of this job." : "Waiting for the job to start…";
    }
    const summary = row.summary ? String(row.summary) : "";
    showText(n.summary, summary);
    n.summary.classList.toggle("bad", endedBadly || failed > 0);
    const details = [
      ["type", row.type], ["hub status", row.hubStatus], ["query", row.queryCondition],
      ["start", row.startTime ? isoUtc(row.startTime) : null], ["end", row.endTime ? isoUtc(row.endTime) : null],
      ["failure", row.failureReason], ["message", row.statusMessage], ["warnings", row.warnings],
    ].filter(([, value]) => value !== null && value !== undefined && value !== "");
    n.details.replaceChildren(...details.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: String(v) })]));
    job.updates = (job.updates || 0) + 1;
    n.updated.textContent = `Updated ${new Date().toISOString().slice(11, 19)} UTC · ${job.polls} GetJob read${job.polls === 1 ? "" : "s"} · ${job.events} event${job.events === 1 ? "" : "s"}`;
    n.updated.dataset.polls = String(job.polls);
    n.updated.dataset.events = String(job.events);
    n.updated.dataset.updates = String(job.updates);
    if (terminal) {
      job.done = true;
      // The agent fires AzureIotDeviceJobEnded (its summary) right after the last status change.
      if (job.sub && job.endTimer === undefined) {
        job.endTimer = setTimeout(() => closeStream(job), JOB_ENDED_WAIT_MS);
      }
      byId("job-panel").dataset.state = "finished";
      n.stop.hidden = true;
      n.resume.hidden = true;
      n.load.hidden = false;
    }
  }

  async function loadJobResults(job) {
    const n = job.nodes;
    const query = `SELECT * FROM devices.jobs WHERE devices.jobs.jobId = '${job.jobId.replace(/'/g, "''")}'`;
    n.load.disabled = true;
    n.results.replaceChildren(el("p", { className: "hint", text: "Loading the per-device results…" }));
    try {
      const answer = await api("POST", servicePath(job.thing, QUERY_JOB_RESULTS), { query });
      if (state.job !== job) return;
      const rows = (answer.doc.rows || []).length;
      n.results.replaceChildren(
        el("p", { className: "hint", "data-testid": "job-results-status" },
          `${rows} device${rows === 1 ? "" : "s"} · `, el("code", { text: query })),
        renderTable(answer.doc, { testid: "job-results", caption: `Per-device results of job ${job.jobId}`, action: null }),
      );
    } catch (error) {
      if (state.job !== job) return;
      n.results.replaceChildren(renderError(QUERY_JOB_RESULTS, error));
    } finally {
      n.load.disabled = false;
    }
  }

  // -- rollouts view ----------------------------------------------------------------------------

  /** A two-colour bar (succeeded green, failed red) over a total; data-outcome says which. */
  function outcomeBar(testid, label) {
    const ok = el("span", { className: "bar-ok", "data-testid": `${testid}-ok` });
    const fail = el("span", { className: "bar-fail", "data-testid": `${testid}-fail` });
    const bar = el("div", { className: "bar", role: "progressbar", "aria-label": label, "aria-valuemin": "0", "data-testid": testid }, ok, fail);
    return { bar, ok, fail };
  }

  function setBar(parts, total, succeeded, failed) {
    const okShare = total > 0 ? Math.min(succeeded, total) / total : 0;
    const failShare = total > 0 ? Math.min(failed, total - Math.min(succeeded, total)) / total : 0;
    parts.ok.style.width = `${100 * okShare}%`;
    parts.fail.style.width = `${100 * failShare}%`;
    parts.bar.setAttribute("aria-valuemax", String(total));
    parts.bar.setAttribute("aria-valuenow", String(succeeded + failed));
    parts.bar.setAttribute("aria-valuetext", `${succeeded + failed} of ${total} devices done: ${succeeded} succeeded, ${failed} failed`);
    parts.bar.dataset.outcome = failShare > 0 ? (okShare > 0 ? "partial" : "failed") : (okShare > 0 ? "ok" : "none");
  }

  function statusBadge(status, testid) {
    const text = String(status || "unknown");
    return el("span", { className: "badge status status-" + text.replace(/[^a-z]/gi, ""), "data-testid": testid, text });
  }

  const count = (row, name) => Number(row[name]) || 0;

  function stopRolloutPolling() {
    const view = state.rollouts;
    if (view && view.timer !== null) clearTimeout(view.timer);
    if (view) view.timer = null;
  }

  /** Take the rollouts view away (another Thing was picked, or Close). */
  function closeRollouts() {
    stopRolloutPolling();
    if (state.rollouts && state.rollouts.sub) unsubscribeEvents(state.rollouts.sub);
    state.rollouts = null;
    const panel = byId("rollouts-panel");
    panel.replaceChildren();
    panel.hidden = true;
    panel.dataset.state = "closed";
  }

  /** Open the rollouts view of a Thing that has the rollout services: the list, then a rollout. */
  function openRollouts(thing) {
    closeRollouts();
    const panel = byId("rollouts-panel");
    const view = {
      thing, timer: null, selected: null, polls: 0, events: 0, token: 0, lastStatus: null, nodes: {},
      sub: null, live: false, reading: false, again: false,
    };
    state.rollouts = view;
    const n = view.nodes;
    n.live = el("p", { className: "hint", "data-testid": "rollouts-source", "aria-live": "polite" });
    n.filter = el("select", { id: "rollouts-filter", "data-testid": "rollouts-filter", onchange: () => loadRolloutList(view) },
      el("option", { value: "", text: "(any status)" }),
      ...ROLLOUT_STATUSES.map((status) => el("option", { value: status, text: status })));
    n.list = el("div", { className: "rollouts-list", "data-testid": "rollouts-list", "aria-live": "polite" });
    n.detail = el("div", { className: "rollout-detail", "data-testid": "rollout-detail" },
      el("p", { className: "hint", text: "Pick a rollout to see its waves." }));
    panel.replaceChildren(
      el("div", { className: "panel-head" },
        el("h3", { id: "rollouts-title", tabindex: "-1" }, `Rollouts on ${thing}`),
        el("button", { type: "button", className: "secondary small", "data-testid": "close-rollouts", onclick: closeRollouts }, "Close")),
      el("div", { className: "rollouts-tools" },
        el("label", { for: "rollouts-filter", text: "Status" }), n.filter,
        el("button", { type: "button", className: "secondary small", "data-testid": "refresh-rollouts", onclick: () => loadRolloutList(view) }, "Refresh")),
      n.live,
      n.list,
      n.detail,
    );
    panel.hidden = false;
    panel.dataset.state = "open";
    panel.scrollIntoView({ block: "nearest" });
    byId("rollouts-title").focus({ preventScroll: true });
    loadRolloutList(view);
    followRollouts(view);
  }

  /** Say where the view's figures come from: pushed events, polling, or the stream coming up. */
  function setRolloutsSource(view, source, text) {
    view.nodes.live.textContent = text;
    view.nodes.live.dataset.source = source;
    byId("rollouts-panel").dataset.source = source;
  }

  /** Follow the Thing's rollout events from the page's stream; poll only while it is down. */
  function followRollouts(view) {
    setRolloutsSource(view, "connecting", "Connecting to the live event stream…");
    const sub = {
      open: (first) => {
        if (state.rollouts !== view) return;
        view.live = true;
        stopRolloutPolling();
        setRolloutsSource(view, "events", "Live: following the rollouts from pushed events (no polling).");
        // Events may have been missed before the stream was (again) open: read once.
        if (!first) loadRolloutList(view);
        if (view.selected !== null && (!first || view.polls > 0)) refreshRollout(view, view.selected);
      },
      event: (fired) => {
        if (state.rollouts === view) onRolloutEvent(view, fired);
      },
      down: (closed, why) => {
        if (state.rollouts !== view) return;
        view.live = false;
        if (closed) view.sub = null;
        setRolloutsSource(view, "polling", closed
          ? `Live events unavailable (${why || "the stand-in refused the event stream"}): the shown rollout is read every ${ROLLOUT_POLL_MS / 1000} s.`
          : `Live events interrupted (reconnecting): the shown rollout is read every ${ROLLOUT_POLL_MS / 1000} s meanwhile.`);
        if (view.selected !== null && view.timer === null && !view.reading && view.lastStatus !== null
            && !ROLLOUT_FINAL.has(String(view.lastStatus))) {
          refreshRollout(view, view.selected);
        }
      },
    };
    view.sub = sub;
    subscribeEvents(sub);
  }

  /** A rollout event of this Thing: the list on a status change, the shown rollout on its own. */
  function onRolloutEvent(view, fired) {
    if (!fired || (fired.event !== ROLLOUT_STATUS_EVENT && fired.event !== ROLLOUT_WAVE_EVENT)) return;
    if (fired.thing !== undefined && fired.thing !== view.thing) return;
    const row = ((fired.data && fired.data.rows) || [])[0];
    if (!row) return;
    if (fired.event === ROLLOUT_STATUS_EVENT) loadRolloutList(view);
    if (view.selected === null || String(row.rolloutId) !== view.selected) return;
    view.events += 1;
    refreshRollout(view, view.selected);
  }

  async function loadRolloutList(view) {
    const inputs = { maxRows: ROLLOUT_LIST_ROWS };
    if (view.nodes.filter.value) inputs.status = view.nodes.filter.value;
    const token = ++view.token;
    try {
      const { doc } = await api("POST", servicePath(view.thing, FIND_ROLLOUTS), inputs);
      if (state.rollouts !== view || token !== view.token) return;
      view.nodes.list.replaceChildren(renderRolloutList(view, doc.rows || []));
    } catch (error) {
      if (state.rollouts !== view || token !== view.token) return;
      view.nodes.list.replaceChildren(renderError(FIND_ROLLOUTS, error));
    }
  }

  function renderRolloutList(view, rows) {
    if (rows.length === 0) return el("p", { className: "hint", "data-testid": "rollouts-empty", text: "No rollout (with this status) on this Thing yet." });
    const head = el("tr", {}, ...["", "rolloutId", "status", "devices", "wave", "created (UTC)"].map((name) =>
      el("th", { scope: "col", className: name ? null : "action", text: name })));
    const body = el("tbody");
    for (const row of rows) {
      const id = String(row.rolloutId);
      const total = count(row, "deviceCount");
      const bar = outcomeBar("rollout-row-bar", `Devices done of rollout ${id}`);
      setBar(bar, total, count(row, "succeededCount"), count(row, "failedCount"));
      body.append(el("tr", { "data-testid": "rollouts-grid-row", "data-rollout-id": id, className: view.selected === id ? "selected" : null },
        el("td", { className: "action" }, el("button", {
          type: "button", className: "small", "data-testid": "view-rollout", "data-rollout-id": id,
          "aria-label": `View rollout ${id}`, onclick: () => viewRollout(view, id),
        }, "View")),
        el("td", { "data-col": "rolloutId", text: id }),
        el("td", { "data-col": "status" }, statusBadge(row.status, "rollouts-grid-status"),
          el("span", { className: "hint rollout-type", text: row.type || "" })),
        el("td", { "data-col": "devices" }, bar.bar,
          el("span", { className: "hint", text: `${count(row, "succeededCount")} ok · ${count(row, "failedCount")} failed · ${count(row, "pendingCount")} pending of ${total}` })),
        el("td", { "data-col": "wave", text: `${count(row, "wave")} of ${count(row, "waveCount")}` }),
        el("td", { "data-col": "createdTime" }, row.createdTime ? el("time", { dateTime: isoUtc(row.createdTime), text: isoUtc(row.createdTime).replace("T", " ").slice(0, 19) + "Z" }) : "—"),
      ));
    }
    return el("div", { className: "grid-wrap", "data-testid": "rollouts-grid-wrap" },
      el("table", { className: "grid rollouts-grid", "data-testid": "rollouts-grid" },
        el("caption", { className: "visually-hidden", text: `Rollouts on ${view.thing}, newest first` }),
        el("thead", {}, head), body));
  }

  function viewRollout(view, rolloutId) {
    if (state.rollouts !== view) return;
    stopRolloutPolling();
    view.selected = rolloutId;
    view.polls = 0;
    view.events = 0;
    view.lastStatus = null;
    for (const tr of view.nodes.list.querySelectorAll("tr[data-rollout-id]")) {
      tr.classList.toggle("selected", tr.dataset.rolloutId === rolloutId);
    }
    const n = view.nodes;
    n.status = statusBadge("…", "rollout-status");
    n.bar = outcomeBar("rollout-progress", "Devices done");
    n.progressText = el("p", { className: "progress-text", "data-testid": "rollout-progress-text", text: "Loading…" });
    n.counters = {};
    const counters = el("dl", { className: "counters" });
    for (const [name, label] of ROLLOUT_COUNTERS) {
      n.counters[name] = el("dd", { "data-testid": `rollout-${name}`, text: "–" });
      counters.append(el("div", { className: "counter counter-" + name }, el("dt", { text: label }), n.counters[name]));
    }
    n.details = el("dl", { className: "job-details", "data-testid": "rollout-details" });
    n.actions = {};
    const actions = el("div", { className: "form-actions" });
    for (const [action, service, label] of ROLLOUT_ACTIONS) {
      n.actions[action] = el("button", {
        type: "button", className: action === "cancel" ? "secondary danger" : "secondary",
        "data-testid": `rollout-${action}`, disabled: true,
        onclick: () => rolloutAction(view, rolloutId, action, service, label),
      }, label);
      actions.append(n.actions[action]);
    }
    n.message = el("p", { className: "hint", "data-testid": "rollout-action-message", "aria-live": "polite", hidden: true });
    n.error = el("div", { "data-testid": "rollout-error" });
    n.waves = el("div", { className: "rollout-waves", "data-testid": "rollout-waves-box" });
    n.source = el("p", { className: "hint", "data-testid": "rollout-source" });
    n.updated = el("p", { className: "hint", "data-testid": "rollout-updated" });
    n.detail.replaceChildren(
      el("div", { className: "panel-head" },
        el("h4", { id: "rollout-title", tabindex: "-1" }, "Rollout ", el("code", { "data-testid": "rollout-id", text: rolloutId })),
        n.status),
      n.bar.bar, n.progressText, counters, n.details, actions, n.message, n.error,
      el("h4", { text: "Waves" }), n.waves, n.source, n.updated,
    );
    n.detail.dataset.rolloutId = rolloutId;
    n.detail.scrollIntoView({ block: "nearest" });
    refreshRollout(view, rolloutId);
  }

  /**
   * GetRollout and GetRolloutWaves, one pair at a time (a read asked for meanwhile follows it);
   * again every ROLLOUT_POLL_MS while the rollout is active and the event stream is down.
   */
  async function refreshRollout(view, rolloutId) {
    if (view.timer !== null) clearTimeout(view.timer);
    view.timer = null;
    if (state.rollouts !== view || view.selected !== rolloutId) return;
    if (view.reading) {
      view.again = true;
      return;
    }
    view.reading = true;
    view.again = false;
    const n = view.nodes;
    const stale = () => state.rollouts !== view || view.selected !== rolloutId;
    let active = true;
    try {
      const [one, waves] = await Promise.all([
        api("POST", servicePath(view.thing, GET_ROLLOUT), { rolloutId }),
        api("POST", servicePath(view.thing, GET_ROLLOUT_WAVES), { rolloutId, maxRows: ROLLOUT_WAVE_ROWS }),
      ]);
      if (stale()) return finishRead(view);
      const row = (one.doc.rows || [])[0];
      if (!row) throw new HttpError(200, "OK", `${GET_ROLLOUT} returned no row for rollout ${rolloutId}`);
      view.polls += 1;
      n.error.replaceChildren();
      updateRollout(view, row);
      renderWaves(view, waves.doc.rows || []);
      active = !ROLLOUT_FINAL.has(String(row.status));
      // Polling: a status change shows in the list too (live, its StatusChanged reloads it).
      if (!view.live && view.lastStatus !== null && view.lastStatus !== row.status) loadRolloutList(view);
      view.lastStatus = row.status;
    } catch (error) {
      if (stale()) return finishRead(view);
      n.error.replaceChildren(renderError(GET_ROLLOUT, error));
    }
    if (finishRead(view)) return;
    const source = !active ? "ended" : view.live ? "events" : "polling";
    n.source.textContent = {
      ended: "The rollout has ended: no more refreshing.",
      events: "Live: read again (GetRollout and GetRolloutWaves) at each pushed event of this rollout, no polling.",
      polling: `Live events unavailable: read every ${ROLLOUT_POLL_MS / 1000} s while the rollout is active (GetRollout and GetRolloutWaves).`,
    }[source];
    n.source.dataset.source = source;
    n.updated.textContent = `Updated ${new Date().toISOString().slice(11, 19)} UTC · ${view.polls} read${view.polls === 1 ? "" : "s"} · ${view.events} event${view.events === 1 ? "" : "s"}`;
    n.updated.dataset.polls = String(view.polls);
    n.updated.dataset.events = String(view.events);
    byId("rollouts-panel").dataset.state = active ? "following" : "ended";
    if (active && !view.live) view.timer = setTimeout(() => refreshRollout(view, rolloutId), ROLLOUT_POLL_MS);
  }

  /** A read is over: when another was asked for meanwhile, start it (true). */
  function finishRead(view) {
    view.reading = false;
    if (state.rollouts !== view || !view.again || view.selected === null) return false;
    refreshRollout(view, view.selected);
    return true;
  }

  function updateRollout(view, row) {
    const n = view.nodes;
    const status = String(row.status || "unknown");
    n.status.textContent = status;
    n.status.className = "badge status status-" + status.replace(/[^a-z]/gi, "");
    for (const [name] of ROLLOUT_COUNTERS) n.counters[name].textContent = row[name] === null || row[name] === undefined ? "–" : String(row[name]);
    const total = count(row, "deviceCount");
    const succeeded = count(row, "succeededCount");
    const failed = count(row, "failedCount");
    setBar(n.bar, total, succeeded, failed);
    n.progressText.textContent = `${succeeded + failed} of ${total} devices done · wave ${count(row, "wave")} of ${count(row, "waveCount")}`;
    const details = [
      ["type", row.type], ["current job", row.currentJobId], ["reason", row.reason],
      ["created", row.createdTime ? isoUtc(row.createdTime) : null],
      ["start", row.startTime ? isoUtc(row.startTime) : null], ["end", row.endTime ? isoUtc(row.endTime) : null],
    ].filter(([, value]) => value !== null && value !== undefined && value !== "");
    n.details.replaceChildren(...details.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: String(v) })]));
    for (const [action, , , allowed] of ROLLOUT_ACTIONS) n.actions[action].disabled = !allowed.has(status);
    n.detail.dataset.status = status;
  }

  function renderWaves(view, rows) {
    const n = view.nodes;
    if (rows.length === 0) {
      n.waves.replaceChildren(el("p", { className: "hint", text: "No wave yet." }));
      return;
    }
    const head = el("tr", {}, ...["wave", "status", "devices", "succeeded", "failed", "pending", "hub jobs"].map((name) =>
      el("th", { scope: "col", text: name })));
    const body = el("tbody");
    for (const w of rows) {
      const attempt = count(w, "attempt");
      const total = count(w, "deviceCount");
      const bar = outcomeBar("wave-bar", `Devices done in wave ${w.wave}`);
      setBar(bar, total, count(w, "succeeded"), count(w, "failed"));
      const jobs = Array.isArray(w.jobIds) ? w.jobIds : [];
      body.append(el("tr", { "data-testid": "rollout-waves-row", "data-wave": String(w.wave), "data-attempt": String(attempt) },
        el("td", { "data-col": "wave", text: attempt > 1 ? `${w.wave} · retry ${attempt - 1}` : String(w.wave) }),
        el("td", { "data-col": "status" }, statusBadge(w.status, "wave-status")),
        el("td", { "data-col": "devices" }, bar.bar, el("span", { className: "hint", text: `${count(w, "succeeded") + count(w, "failed")} of ${total} done` })),
        el("td", { "data-col": "succeeded", text: String(count(w, "succeeded")) }),
        el("td", { "data-col": "failed", text: String(count(w, "failed")) }),
        el("td", { "data-col": "pending", text: String(count(w, "pending")) }),
        el("td", { "data-col": "jobIds" }, ...(jobs.length ? jobs.map((id) => el("code", { className: "job-id", text: String(id) })) : ["—"])),
      ));
    }
    n.waves.replaceChildren(el("div", { className: "grid-wrap", "data-testid": "rollout-waves-wrap" },
      el("table", { className: "grid waves-grid", "data-testid": "rollout-waves" },
        el("caption", { className: "visually-hidden", text: `Waves of rollout ${view.selected}` }),
        el("thead", {}, head), body)));
  }

  /** Pause, resume or cancel: call the service, show the status it answers, follow again. */
  async function rolloutAction(view, rolloutId, action, service, label) {
    if (state.rollouts !== view || view.selected !== rolloutId) return;
    const n = view.nodes;
    for (const button of Object.values(n.actions)) button.disabled = true;
    try {
      const { doc } = await api("POST", servicePath(view.thing, service), { rolloutId });
      if (state.rollouts !== view || view.selected !== rolloutId) return;
      const row = (doc.rows || [])[0] || {};
      n.error.replaceChildren();
      const later = action !== "resume" && !ROLLOUT_FINAL.has(String(row.status)) && row.status !== "paused";
      showText(n.message, `${label}: the rollout is now ${row.status}${later ? ` (the ${action} takes effect at the next wave boundary)` : ""}.`);
      n.message.dataset.status = String(row.status);
      updateRollout(view, row);
    } catch (error) {
      if (state.rollouts !== view || view.selected !== rolloutId) return;
      n.error.replaceChildren(renderError(service, error));
      showText(n.message, "");
    }
    loadRolloutList(view);
    stopRolloutPolling();
    refreshRollout(view, rolloutId);
  }

  // -- start ------------------------------------------------------------------------------------

  function start() {
    byId("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const key = byId("app-key").value.trim();
      if (!key) {
        showKeyForm("Enter the application key.");
        return;
      }
      useKey(key);
    });
    byId("change-key").addEventListener("click", () => {
      sessionStorage.removeItem(KEY_STORAGE);
      state.key = null;
      showKeyForm("");
    });
    byId("refresh-things").addEventListener("click", () => refreshThings(true));
    byId("service-filter").addEventListener("input", renderServices);
    byId("open-rollouts").addEventListener("click", () => {
      if (state.thing) openRollouts(state.thing);
    });
    const key = keyFromHash() || sessionStorage.getItem(KEY_STORAGE);
    if (key) useKey(key);
    else showKeyForm("");
  }

  document.addEventListener("DOMContentLoaded", start);
})();
