// edgelink web UI: plain DOM, no framework, no build step. Every call is a
// same-origin fetch with the session cookie; unsafe methods carry Origin,
// which api-server checks (CSRF).
"use strict";

const $ = (sel) => document.querySelector(sel);

async function api(method, path, body) {
  const opts = { method, headers: {}, credentials: "same-origin" };
  if (body !== undefined) {
    opts.headers["content-type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const resp = await fetch(path, opts);
  if (resp.status === 401) {
    location.href = "/api/auth/login?return_to=" + encodeURIComponent(location.pathname);
    throw new Error("signed out");
  }
  if (!resp.ok) {
    let msg = resp.status + " " + resp.statusText;
    try { msg = (await resp.json()).message || msg; } catch (_) { /* not JSON */ }
    throw new Error(msg);
  }
  return resp.status === 204 ? null : resp.json();
}

function say(text) { $("#status").textContent = text; }

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function when(iso) { return iso ? new Date(iso).toLocaleString() : "never"; }

async function loadDevices() {
  const list = await api("GET", "/api/v1/devices?limit=200");
  const tbody = $("#devices tbody");
  tbody.replaceChildren();
  $("#empty").hidden = list.devices.length > 0;
  for (const d of list.devices) {
    const online = d.status === "online";
    const actions = el("td", { class: "actions" });
    const open = el("a", { class: "button", href: `/api/v1/devices/${d.id}/open`, target: "_blank", rel: "noopener",
                           "aria-label": `Open ${d.name}` }, "Open");
    if (!online) open.setAttribute("aria-disabled", "true");
    const session = el("button", { type: "button", onclick: () => showSession(d) }, "Session");
    session.disabled = !online;
    actions.append(open,
      el("button", { type: "button", onclick: () => showDevice(d) }, "Details"),
      el("button", { type: "button", onclick: () => rename(d) }, "Rename"),
      session,
      el("button", { type: "button", class: "danger", onclick: () => remove(d) }, "Delete"));
    tbody.append(el("tr", { "data-device": d.id },
      el("td", {}, d.name),
      el("td", {}, d.type),
      el("td", {}, el("span", { class: `badge ${d.status}` }, d.status)),
      el("td", {}, when(d.last_seen_at)),
      actions));
  }
}

async function rename(d) {
  const name = prompt("New name", d.name);
  if (!name || name === d.name) return;
  try { await api("PATCH", `/api/v1/devices/${d.id}`, { name }); say(`Renamed to ${name}.`); await loadDevices(); }
  catch (e) { say(`Rename failed: ${e.message}`); }
}

async function remove(d) {
  if (!confirm(`Delete ${d.name}? Its tunnel closes and it can no longer connect.`)) return;
  try { await api("DELETE", `/api/v1/devices/${d.id}`); say(`${d.name} deleted.`); await loadDevices(); }
  catch (e) { say(`Delete failed: ${e.message}`); }
}

async function showSession(d) {
  try {
    const s = await api("GET", `/api/v1/devices/${d.id}/session`);
    if (confirm(`${d.name}: connected since ${when(s.connected_at)} from ${s.remote_addr}, last heartbeat ${when(s.last_heartbeat)}.\n\nClose this session? (The device reconnects by itself.)`)) {
      await api("POST", `/api/v1/devices/${d.id}/session/close`);
      say(`Session of ${d.name} closed.`);
      await loadDevices();
    }
  } catch (e) { say(`Session: ${e.message}`); }
}

function bytes(n) {
  if (n == null) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

let chart = null;
let shown = null;

// The device panel: its latest heartbeat, a 24-hour chart (uPlot) of CPU
// and load from the metrics API, and its message queue.
async function showDevice(d) {
  shown = d;
  $("#device-h").textContent = d.name;
  $("#device").hidden = false;
  await refreshDevice();
  $("#device").scrollIntoView();
}

async function refreshDevice() {
  const d = shown;
  if (!d) return;
  const [m, q, c] = await Promise.all([
    api("GET", `/api/v1/devices/${d.id}/metrics?step=1m`),
    api("GET", `/api/v1/devices/${d.id}/messages?limit=50`),
    api("GET", `/api/v1/devices/${d.id}/commands`),
  ]);
  showDeviceCommands(c.commands);
  const last = m.points[m.points.length - 1];
  const facts = [
    ["Status", d.status], ["Last report", last ? when(new Date(last.at).toISOString()) : "never"],
    ["CPU", last?.cpu_percent != null ? `${last.cpu_percent.toFixed(1)} %` : "–"],
    ["Load (1 min)", last?.load_1m != null ? last.load_1m.toFixed(2) : "–"],
    ["Memory", last ? `${bytes(last.memory_used_bytes)} of ${bytes(last.memory_total_bytes)}` : "–"],
    ["Disk", last ? `${bytes(last.disk_used_bytes)} of ${bytes(last.disk_total_bytes)}` : "–"],
    ["Network in / out", last ? `${bytes(last.network_in_bytes)} / ${bytes(last.network_out_bytes)}` : "–"],
    ["Agent", last?.agent_version || "–"],
  ];
  $("#device-latest").replaceChildren(...facts.map(([k, v]) => el("div", {}, el("dt", {}, k), el("dd", {}, v))));
  const xs = m.points.map((p) => p.at / 1000);
  const cpu = m.points.map((p) => p.cpu_percent ?? null);
  const load = m.points.map((p) => p.load_1m ?? null);
  $("#device-chart-empty").hidden = xs.length > 0;
  if (chart) { chart.destroy(); chart = null; }
  if (xs.length > 0 && window.uPlot) {
    const box = $("#device-chart");
    const now = Date.now() / 1000;
    chart = new uPlot({
      width: Math.max(320, box.clientWidth || 600), height: 220,
      scales: { x: { time: true, range: [now - 86400, now] } },
      series: [{}, { label: "CPU %", stroke: "#1f3a5f", scale: "%" }, { label: "load", stroke: "#f0a400", scale: "load" }],
      axes: [{}, { scale: "%" }, { scale: "load", side: 1, grid: { show: false } }],
    }, [xs, cpu, load], box);
  }
  const tbody = $("#device-messages tbody");
  tbody.replaceChildren(...q.messages.map((msg) => el("tr", { "data-message": msg.id },
    el("td", {}, when(msg.created_at)), el("td", {}, msg.message_type), el("td", {}, msg.priority),
    el("td", {}, el("span", { class: `badge ${msg.status}` }, msg.status)), el("td", {}, String(msg.attempts)),
    el("td", {}, when(msg.expires_at)))));
  $("#device-messages-empty").hidden = q.messages.length > 0;
}

function commandText(c) {
  return `${c.status}${c.exit_code !== null ? ` (exit ${c.exit_code})` : ""}${c.error ? `: ${c.error}` : ""}` +
    `\n${c.stdout || ""}${c.stdout_truncated ? "\n[stdout truncated at the device's output cap]" : ""}` +
    `${c.stderr ? `\n[stderr]\n${c.stderr}` : ""}${c.stderr_truncated ? "\n[stderr truncated]" : ""}`;
}

function showDeviceCommands(commands) {
  $("#device-commands tbody").replaceChildren(...commands.map((c) => el("tr", { "data-command": c.command_id },
    el("td", {}, when(c.created_at)),
    el("td", {}, el("code", {}, [c.command, ...(c.args || [])].join(" "))),
    el("td", {}, el("button", { type: "button", class: "link", onclick: () => {
      const out = $("#device-command-output");
      out.hidden = false;
      out.textContent = commandText(c);
    } }, c.status)),
    el("td", {}, c.exit_code !== null ? String(c.exit_code) : "–"),
    el("td", {}, (c.status === "pending" || c.status === "running") && !c.cancel_requested_at
      ? el("button", { type: "button", class: "link", onclick: () => cancelDeviceCommand(c) }, "Cancel")
      : ""))));
  $("#device-commands-empty").hidden = commands.length > 0;
}

async function cancelDeviceCommand(c) {
  const out = $("#device-command-output");
  out.hidden = false;
  try {
    const now = await api("POST", `/api/v1/commands/${c.command_id}/cancel`);
    out.textContent = now.status === "canceled" ? "canceled" : "canceling…";
    if (shown) showDeviceCommands((await api("GET", `/api/v1/devices/${shown.id}/commands`)).commands);
  } catch (e) { out.textContent = `cancel failed: ${e.message}`; }
}

async function runDeviceCommand(ev) {
  ev.preventDefault();
  const d = shown;
  if (!d) return;
  const [command, ...args] = $("#device-command").value.trim().split(/\s+/);
  const out = $("#device-command-output");
  out.hidden = false;
  out.textContent = "sent…";
  try {
    let c = await api("POST", `/api/v1/devices/${d.id}/commands`,
      { command, args, timeout_ms: Number($("#device-command-timeout").value) * 1000 });
    showDeviceCommands((await api("GET", `/api/v1/devices/${d.id}/commands`)).commands);
    let last = c.status;
    while (c.status === "pending" || c.status === "running") {
      c = await api("GET", `/api/v1/commands/${c.command_id}?wait=2s`);
      if (c.status !== last) {
        // Started (or canceled): the history shows it, with its Cancel button.
        last = c.status;
        showDeviceCommands((await api("GET", `/api/v1/devices/${d.id}/commands`)).commands);
      }
    }
    out.textContent = commandText(c);
    showDeviceCommands((await api("GET", `/api/v1/devices/${d.id}/commands`)).commands);
  } catch (e) { out.textContent = `failed: ${e.message}`; }
}

async function pair() {
  try {
    const p = await api("POST", "/api/v1/pairings");
    $("#pair-code").textContent = p.code;
    $("#pair-cmd").textContent = p.command;
    $("#pair-exp").textContent = when(p.expires_at);
    $("#pair-exp").setAttribute("datetime", p.expires_at);
    $("#pairing").hidden = false;
  } catch (e) { say(`Pairing failed: ${e.message}`); }
}

async function loadSessions() {
  const { sessions } = await api("GET", "/api/v1/sessions/browser");
  const ul = $("#sessions");
  ul.replaceChildren();
  for (const s of sessions) {
    const label = `${s.current ? "This browser" : s.user_agent || "unknown browser"} — signed in ${when(s.created_at)}${s.ip ? " from " + s.ip : ""}`;
    const li = el("li", {}, label + " ");
    if (!s.current) {
      li.append(el("button", { type: "button", onclick: async () => {
        await api("DELETE", `/api/v1/sessions/browser/${s.id}`); await loadSessions();
      } }, "Sign out"));
    }
    ul.append(li);
  }
}

const SCOPES = ["device:read", "device:write", "device:delete", "device:manage", "session:read",
                "session:manage", "pairing:create", "token:manage",
                "message:send", "message:read", "command:execute", "proxy:manage"];

async function loadTokens() {
  const { tokens } = await api("GET", "/api/v1/tokens");
  const tbody = $("#tokens tbody");
  tbody.replaceChildren();
  for (const t of tokens) {
    const expires = t.expires_at ? when(t.expires_at) : "never";
    const exp = el("td", {}, expires);
    if (t.expires_soon) exp.append(" ", el("span", { class: "badge soon" }, "expires soon"));
    tbody.append(el("tr", { "data-token": t.id },
      el("td", {}, t.name),
      el("td", {}, t.scopes.join(" ")),
      exp,
      el("td", {}, t.last_used_at ? `${when(t.last_used_at)} from ${t.last_used_ip || "?"}` : "never"),
      el("td", { class: "actions" }, el("button", { type: "button", class: "danger", onclick: async () => {
        if (!confirm(`Revoke ${t.name}? Programs using it stop working at once.`)) return;
        try { await api("DELETE", `/api/v1/tokens/${t.id}`); say(`${t.name} revoked.`); await loadTokens(); }
        catch (e) { say(`Revoke failed: ${e.message}`); }
      } }, "Revoke"))));
  }
}

async function createToken(ev) {
  ev.preventDefault();
  const scopes = [...document.querySelectorAll("#token-scopes input:checked")].map((i) => i.value);
  const expiry = $("#token-expiry").value;
  const body = {
    name: $("#token-name").value,
    scopes,
    expires_in_days: expiry ? Number(expiry) : null,
    allowed_ips: $("#token-ips").value.split(/[\s,]+/).filter(Boolean),
  };
  try {
    const t = await api("POST", "/api/v1/tokens", body);
    $("#token-value").textContent = t.secret;
    $("#token-secret").hidden = false;
    say(`Token ${t.name} created.`);
    await loadTokens();
  } catch (e) { say(`Token not created: ${e.message}`); }
}

function setupTokens() {
  const box = $("#token-scopes");
  for (const s of SCOPES) {
    box.append(el("label", { class: "scope" }, el("input", { type: "checkbox", value: s }), ` ${s}`));
  }
  $("#token-form").addEventListener("submit", createToken);
  $("#token-copy").addEventListener("click", () => navigator.clipboard?.writeText($("#token-value").textContent));
}

let commandProxy = null;

async function loadProxies() {
  const { proxies } = await api("GET", "/api/v1/proxies");
  const tbody = $("#proxies tbody");
  tbody.replaceChildren();
  for (const p of proxies) {
    tbody.append(el("tr", { "data-proxy": p.id },
      el("td", {}, p.name),
      el("td", {}, el("code", {}, p.id)),
      el("td", {}, p.group || "—"),
      el("td", {}, p.connected ? "yes" : "no"),
      el("td", {}, p.last_seen_at ? `${when(p.last_seen_at)} from ${p.last_seen_ip || "?"}` : "never"),
      el("td", { class: "actions" },
        el("button", { type: "button", onclick: () => {
          commandProxy = p;
          $("#command-proxy").textContent = p.name;
          $("#command-form").hidden = false;
        } }, "Run command"),
        el("button", { type: "button", onclick: async () => {
          if (!confirm(`New key for ${p.name}? Its current connection ends.`)) return;
          try { showProxyKey(await api("POST", `/api/v1/proxies/${p.id}/key`)); await loadProxies(); }
          catch (e) { say(`Rotation failed: ${e.message}`); }
        } }, "New key"),
        el("button", { type: "button", class: "danger", onclick: async () => {
          if (!confirm(`Revoke ${p.name}? It is disconnected at once.`)) return;
          try { await api("DELETE", `/api/v1/proxies/${p.id}`); say(`${p.name} revoked.`); await loadProxies(); }
          catch (e) { say(`Revoke failed: ${e.message}`); }
        } }, "Revoke"))));
  }
}

function showProxyKey(p) {
  $("#proxy-value").textContent =
    `SERVER_URL=${location.origin} PROXY_ID=${p.id} API_KEY=${p.api_key} edge-agent proxy`;
  $("#proxy-secret").hidden = false;
}

async function createProxy(ev) {
  ev.preventDefault();
  const body = {
    name: $("#proxy-name").value,
    group: $("#proxy-group").value,
    allowed_ips: $("#proxy-ips").value.split(/[\s,]+/).filter(Boolean),
  };
  try {
    const p = await api("POST", "/api/v1/proxies", body);
    showProxyKey(p);
    say(`Intermediary ${p.name} registered.`);
    await loadProxies();
  } catch (e) { say(`Not registered: ${e.message}`); }
}

async function runCommand(ev) {
  ev.preventDefault();
  if (!commandProxy) return;
  const body = {
    host: $("#command-host").value,
    port: Number($("#command-port").value),
    username: $("#command-user").value,
    password: $("#command-password").value,
    command: $("#command-line").value,
    timeout_ms: Number($("#command-timeout").value) * 1000,
  };
  if ($("#command-hostkey").value) body.host_key = $("#command-hostkey").value;
  const out = $("#command-output");
  out.hidden = false;
  out.textContent = "running…";
  try {
    let c = await api("POST", `/api/v1/proxies/${commandProxy.id}/commands`, body);
    while (c.status === "pending" || c.status === "running") {
      c = await api("GET", `/api/v1/commands/${c.command_id}?wait=30s`);
    }
    out.textContent = commandText(c);
  } catch (e) { out.textContent = `failed: ${e.message}`; }
}

function setupProxies() {
  $("#proxy-form").addEventListener("submit", createProxy);
  $("#command-form").addEventListener("submit", runCommand);
}

async function logout() {
  const out = await api("POST", "/api/auth/logout");
  location.href = out.end_session_url || "/";
}

async function main() {
  const me = await api("GET", "/api/auth/me");
  $("#me").textContent = `${me.name} (${me.email})`;
  $("#logout").addEventListener("click", logout);
  $("#pair").addEventListener("click", pair);
  $("#device-close").addEventListener("click", () => { $("#device").hidden = true; shown = null; });
  setupTokens();
  setupProxies();
  $("#device-command-form").addEventListener("submit", runDeviceCommand);
  await Promise.all([loadDevices(), loadSessions(), loadTokens(), loadProxies()]);
  setInterval(() => loadDevices().catch((e) => say(e.message)), 3000);
  setInterval(() => refreshDevice().catch((e) => say(e.message)), 15000);
}

main().catch((e) => say(e.message));
