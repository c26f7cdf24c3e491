// The clinic alarm dashboard: plain JavaScript against the fleet API's HTTP/JSON
// routes (docs/api.md), no libraries and no requests anywhere but this server. Text
// from the server is always set as text, never as markup; the one exception is the
// pump chart, an SVG this server drew.
"use strict";

const POLL_MS = 5000;
const DAY_MS = 86400000;
const SHAPES = { HIGH: "▲", MEDIUM: "◆", LOW: "●" };
const $ = (id) => document.getElementById(id);

let token = sessionStorage.getItem("fleet-token");
let me = null;
let timer = null;
// The board is redrawn only when the alarms change, and a note being typed survives
// a redraw: polling must never eat a clinician's words.
let shownAlarms = "";
const drafts = new Map();

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: Object.assign(
      { Authorization: "Bearer " + token },
      body ? { "Content-Type": "application/json" } : {}
    ),
    body: body ? JSON.stringify(body) : undefined,
  });
  if (response.status === 401) {
    logout("Your session has ended; log in again.");
    throw new Error("unauthenticated");
  }
  if (!response.ok) {
    let reason = response.statusText;
    try { reason = (await response.json()).error || reason; } catch (_) { /* not JSON */ }
    throw new Error(reason);
  }
  return response;
}

function element(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

function age(from) {
  const minutes = Math.max(0, Math.round((Date.now() - new Date(from)) / 60000));
  if (minutes < 60) return minutes + " min ago";
  if (minutes < 2880) return Math.round(minutes / 60) + " h ago";
  return Math.round(minutes / 1440) + " days ago";
}

function when(at) {
  return new Date(at).toISOString().replace("T", " ").slice(0, 16) + " UTC";
}

function priorityBadge(priority) {
  const level = priority.toLowerCase();
  return element("span", {
    class: "priority " + level,
    text: (SHAPES[priority] || "■") + " " + priority,
    "aria-label": "priority " + priority,
  });
}

function alarmItem(alarm) {
  const item = element("li", { class: "alarm " + alarm.priority.toLowerCase(), "data-alarm-id": alarm.alarm_id });
  const pump = element("button", { type: "button", class: "link", text: alarm.pump_id,
    "aria-label": "Open pump " + alarm.pump_id });
  pump.addEventListener("click", () => openPump(alarm.pump_id));
  item.append(
    element("div", { class: "headline" }, priorityBadge(alarm.priority),
      element("strong", { text: " " + alarm.kind + " " }), pump,
      element("span", { class: "age", text: " raised " + age(alarm.raised_at) + " (" + when(alarm.raised_at) + ")" })),
    element("p", { class: "message", text: alarm.message })
  );
  if (alarm.acknowledged_at) {
    item.append(element("p", { class: "acknowledged",
      text: "✓ Acknowledged by " + alarm.acknowledged_by + ", " + when(alarm.acknowledged_at) }));
  } else if (me && me.role === "clinic") {
    const label = "Acknowledge " + alarm.priority + " " + alarm.kind + " on " + alarm.pump_id;
    const note = element("input", { type: "text", name: "note", maxlength: "2000",
      placeholder: "Note (optional)", "aria-label": "Note for " + label });
    note.value = drafts.get(alarm.alarm_id) || "";
    note.addEventListener("input", () => drafts.set(alarm.alarm_id, note.value));
    const button = element("button", { type: "submit", class: "acknowledge", text: "Acknowledge", "aria-label": label });
    const form = element("form", { class: "ack" }, note, button);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      button.disabled = true;
      try {
        await api("POST", "/api/v1/alarms/" + encodeURIComponent(alarm.alarm_id) + "/acknowledge",
          { clinician: me.name, note: note.value });
        drafts.delete(alarm.alarm_id);
        await refresh();
      } catch (error) {
        button.disabled = false;
        status("Not acknowledged: " + error.message, true);
      }
    });
    item.append(form);
  }
  return item;
}

function status(text, isError) {
  const line = $("status");
  line.textContent = text;
  line.classList.toggle("error", Boolean(isError));
}

async function refresh() {
  try {
    const [alarms, pumps] = await Promise.all([
      api("GET", "/api/v1/alarms?active=true").then((r) => r.json()),
      api("GET", "/api/v1/pumps").then((r) => r.json()),
    ]);
    const fresh = JSON.stringify(alarms);
    if (fresh !== shownAlarms) {
      const typing = document.activeElement && document.activeElement.closest("li.alarm");
      const focusId = typing ? typing.getAttribute("data-alarm-id") : null;
      $("alarms").replaceChildren(...(alarms.length ? alarms.map(alarmItem)
        : [element("li", { class: "none", text: "No active alarms." })]));
      shownAlarms = fresh;
      if (focusId) {
        const field = document.querySelector('li[data-alarm-id="' + CSS.escape(focusId) + '"] input[name=note]');
        if (field) field.focus();
      }
    }
    $("alarm-count").textContent = "(" + alarms.length + ")";
    const lost = alarms.filter((a) => a.kind === "TELEMETRY_LOST");
    $("lost").replaceChildren(...(lost.length ? lost.map((a) => element("li", {
      text: a.pump_id + ": no reading since " + when(a.raised_at) }))
      : [element("li", { class: "none", text: "Every pump is reporting." })]));
    // "This week" on each pump's own clock (its last contact): replayed or delayed
    // telemetry still lists the refills that are close for that pump.
    const due = pumps.filter((p) => p.refill_due_at && p.last_contact &&
      new Date(p.refill_due_at) - new Date(p.last_contact) <= 7 * DAY_MS)
      .sort((a, b) => new Date(a.refill_due_at) - new Date(b.refill_due_at));
    $("refills").replaceChildren(...(due.length ? due.map((p) => {
      const days = Math.round((new Date(p.refill_due_at) - new Date(p.last_contact)) / DAY_MS);
      const text = days < 0 ? "overdue by " + -days + " days" : "due in " + days + " days";
      return element("li", { text: p.pump_id + ": " + when(p.refill_due_at) + " (" + text +
        ", reservoir " + (p.reservoir_ml == null ? "?" : p.reservoir_ml.toFixed(1)) + " mL)" });
    }) : [element("li", { class: "none", text: "No refill due within a week." })]));
    status("Updated " + new Date().toLocaleTimeString(), false);
  } catch (error) {
    if (error.message !== "unauthenticated") status("Could not update: " + error.message, true);
  }
}

let openPumpId = null;

async function openPump(pumpId, days) {
  openPumpId = pumpId;
  $("pump").hidden = false;
  $("pump-title").textContent = "Pump " + pumpId;
  $("pump-chart").textContent = "Loading…";
  try {
    const pumps = await api("GET", "/api/v1/pumps").then((r) => r.json());
    const pump = pumps.find((p) => p.pump_id === pumpId);
    const end = pump && pump.last_contact ? new Date(pump.last_contact) : new Date();
    const to = new Date(end.getTime() + 3600000);
    const from = new Date(to.getTime() - (days || 7) * DAY_MS);
    const svg = await api("GET", "/api/v1/pumps/" + encodeURIComponent(pumpId) + "/chart.svg?from=" +
      from.toISOString() + "&to=" + to.toISOString()).then((r) => r.text());
    if (openPumpId !== pumpId) return; // another pump was opened meanwhile
    $("pump-chart").innerHTML = svg;
    $("pump").scrollIntoView();
  } catch (error) {
    $("pump-chart").textContent = "No chart: " + error.message;
  }
}

function show() {
  $("login").hidden = true;
  $("board").hidden = false;
  $("who").hidden = false;
  $("user").textContent = me.name + (me.clinic_id ? " (" + me.clinic_id + ")" : " (manufacturer, read-only)");
  refresh();
  timer = setInterval(refresh, POLL_MS);
}

function logout(message) {
  clearInterval(timer);
  shownAlarms = "";
  drafts.clear();
  sessionStorage.removeItem("fleet-token");
  token = null;
  me = null;
  $("board").hidden = true;
  $("who").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
}

async function login(candidate) {
  const response = await fetch("/api/v1/login", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ token: candidate }),
  });
  if (!response.ok) throw new Error(response.status === 401 ? "That token is not valid." : response.statusText);
  me = await response.json();
  token = candidate;
  sessionStorage.setItem("fleet-token", candidate);
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await login($("token").value.trim());
      $("token").value = "";
      show();
    } catch (error) {
      $("login-error").textContent = error.message;
    }
  });
  $("logout").addEventListener("click", () => logout());
  $("pump-close").addEventListener("click", () => { $("pump").hidden = true; openPumpId = null; });
  for (const button of document.querySelectorAll(".range button[data-days]")) {
    button.addEventListener("click", () => {
      if (openPumpId) openPump(openPumpId, Number(button.getAttribute("data-days")));
    });
  }
  if (token) login(token).then(show, () => logout());
});
