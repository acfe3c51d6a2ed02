// evalkit serve — the model selector page. Plain JS, no build step. Every text from the server is set with
// textContent (never innerHTML), so a model name or rationale can never inject markup.
"use strict";

const MODELS_URL = "/api/image-studio/edit/models";
const EDIT_URL = "/api/image-studio/edit/process";
const SVG = "http://www.w3.org/2000/svg";
const state = { data: null, tier: null, operation: null };

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function headers() {
  const token = sessionStorage.getItem("evalkit-serve-token");
  return token ? { Authorization: "Bearer " + token } : {};
}

async function api(url, options = {}) {
  const resp = await fetch(url, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
  let body = null;
  try { body = await resp.json(); } catch (e) { body = null; }
  if (resp.status === 401) $("token-box").hidden = false;
  if (!resp.ok) {
    const err = (body && body.error) || { category: "server", message: "HTTP " + resp.status };
    const e = new Error(err.message);
    e.category = err.category;
    throw e;
  }
  return body;
}

const usd = (v) => (v === null || v === undefined ? "—" : "$" + Number(v).toFixed(v < 0.1 ? 3 : 2));
const ms = (v) => (v === null || v === undefined ? "—" : v >= 1000 ? (v / 1000).toFixed(1) + " s" : Math.round(v) + " ms");
const q = (v) => (v === null || v === undefined ? "—" : Number(v).toFixed(2));

function showError(message) {
  const box = $("error");
  box.textContent = message || "";
  box.hidden = !message;
}

// ---- header, tabs, operations ------------------------------------------------------------------------

function renderHeader(d) {
  const info = $("run-info");
  info.textContent = "";
  info.append(el("div", {}, "run " + (d.run_id || "?")));
  const age = d.age_days === null || d.age_days === undefined ? "" : " (" + d.age_days.toFixed(1) + " days ago)";
  info.append(el("div", {}, "decided " + (d.generated_at || "?") + age));
  if (d.quality) info.append(el("div", {}, "quality: " + d.quality.metric + " (" + d.quality.source + ")"));
  $("simulated-banner").hidden = !d.simulated;
  const warn = $("warnings");
  warn.textContent = "";
  // the SIMULATED banner already says what the simulated-run warning says
  const shown = (d.warnings || []).filter((w) => !(d.simulated && w.includes("SIMULATED run")));
  for (const w of shown) warn.append(el("div", {}, w));
  warn.hidden = !shown.length;
}

function renderTabs() {
  const tabs = $("tier-tabs");
  tabs.textContent = "";
  for (const name of Object.keys(state.data.tiers)) {
    const b = el("button", { type: "button", role: "tab", "data-tier": name, "aria-selected": String(name === state.tier) }, name);
    b.addEventListener("click", () => selectTier(name));
    tabs.append(b);
  }
}

function renderOperations() {
  const sel = $("operation");
  const ops = Object.keys(state.data.tiers[state.tier].operations);
  sel.textContent = "";
  for (const op of ops) sel.append(el("option", { value: op }, op.replace(/_/g, " ")));
  if (!ops.includes(state.operation)) state.operation = ops.includes("general_edit") ? "general_edit" : ops[0];
  sel.value = state.operation;
}

function selectTier(name) {
  state.tier = name;
  renderTabs();
  renderOperations();
  renderSelection();
}

// ---- table, chart, model choice ----------------------------------------------------------------------

function currentOp() {
  return state.data.tiers[state.tier].operations[state.operation];
}

function renderSelection() {
  const tier = state.data.tiers[state.tier];
  const op = currentOp();
  const c = tier.constraints || {};
  const limits = [];
  if (c.max_cost_usd !== null && c.max_cost_usd !== undefined) limits.push("≤ " + usd(c.max_cost_usd) + " per edit");
  if (c.max_latency_p95_ms) limits.push("p95 ≤ " + ms(c.max_latency_p95_ms));
  if (c.allowed_providers) limits.push("providers: " + c.allowed_providers.join(", "));
  $("tier-desc").textContent = (tier.description || "") + (limits.length ? " — " + limits.join(" · ") : "");
  const badge = $("status-badge");
  badge.textContent = (op.status || "").replace(/_/g, " ");
  badge.className = "badge " + (op.status || "");
  renderTable(op);
  renderChart(op);
  renderModelChoice(op);
  $("rationale").textContent = op.rationale ? "Why: " + op.rationale : "";
  $("route-note").textContent = op.fallback_order && op.fallback_order.length
    ? "Serving order: " + op.fallback_order.join(" → ") + " (the next is tried only when a call provably was not charged)"
    : op.unavailable ? "Not served: " + op.unavailable : "";
}

function renderTable(op) {
  const body = $("models-table").querySelector("tbody");
  body.textContent = "";
  for (const m of op.models) {
    const excluded = m.eligibility === "excluded";
    const tr = el("tr", { "data-model": m.model, class: m.role === "default" ? "default" : excluded ? "excluded" : "" });
    const name = el("td");
    name.append(el("span", { class: "name" }, m.display_name || m.model));
    name.append(el("span", { class: "vendor" }, [m.model, m.vendor, m.provider].filter(Boolean).join(" · ")));
    name.title = m.rationale || "";
    tr.append(name);
    const roleText = m.role === "alternative" ? (excluded ? "excluded" : m.eligibility === "eligible" ? "alternative" : "short of evidence") : m.role;
    const role = el("td");
    role.append(el("span", { class: "role " + (excluded ? "excluded" : m.role) }, roleText));
    tr.append(role);
    tr.append(el("td", { class: "num" }, usd(m.cost_usd)));
    tr.append(el("td", { class: "num" }, ms(m.latency_p95_ms)));
    const qcell = el("td", { class: "num" }, q(m.quality));
    if (m.quality_ci && m.quality_ci[0] !== null && m.quality_ci[0] !== undefined) {
      qcell.append(el("span", { class: "ci" }, q(m.quality_ci[0]) + "–" + q(m.quality_ci[1])));
    }
    tr.append(qcell);
    const ev = m.evidence || {};
    const evText = ev.n === null || ev.n === undefined ? "—"
      : "n=" + ev.n;
    const evCell = el("td", { class: "num" }, evText);
    if (ev.success_rate !== null && ev.success_rate !== undefined) {
      evCell.append(el("span", { class: "ci" }, Math.round(ev.success_rate * 100) + "% succeeded"));
    }
    tr.append(evCell);
    body.append(tr);
  }
}

function renderChart(op) {
  const box = $("chart");
  box.textContent = "";
  const pts = op.models.filter((m) => m.cost_usd !== null && m.quality !== null);
  const W = 460, H = 300, L = 52, R = 28, T = 16, B = 40;
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "cost versus quality" });
  if (state.data.simulated) root.append(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "watermark" }, "SIMULATED"));
  if (!pts.length) {
    root.append(svg("text", { x: W / 2, y: H / 2 + 30, "text-anchor": "middle" }, "no model with both a price and a quality"));
    box.append(root);
    return;
  }
  const costs = pts.map((m) => m.cost_usd), quals = pts.flatMap((m) => [m.quality, ...(m.quality_ci || []).filter((v) => v !== null)]);
  let x0 = 0, x1 = Math.max(...costs) * 1.15 || 0.01;
  let y0 = Math.min(...quals), y1 = Math.max(...quals);
  const pad = (y1 - y0) * 0.15 || 0.5; y0 -= pad; y1 += pad;
  const sx = (v) => L + ((v - x0) / (x1 - x0)) * (W - L - R);
  const sy = (v) => H - B - ((v - y0) / (y1 - y0)) * (H - T - B);
  for (let i = 0; i <= 4; i++) {
    const xv = x0 + ((x1 - x0) * i) / 4, yv = y0 + ((y1 - y0) * i) / 4;
    root.append(svg("line", { x1: sx(xv), x2: sx(xv), y1: T, y2: H - B, class: "grid" }));
    root.append(svg("line", { x1: L, x2: W - R, y1: sy(yv), y2: sy(yv), class: "grid" }));
    root.append(svg("text", { x: sx(xv), y: H - B + 14, "text-anchor": i === 4 ? "end" : "middle" }, "$" + xv.toFixed(3)));
    root.append(svg("text", { x: L - 6, y: sy(yv) + 4, "text-anchor": "end" }, yv.toFixed(1)));
  }
  root.append(svg("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, class: "axis" }));
  root.append(svg("line", { x1: L, x2: L, y1: T, y2: H - B, class: "axis" }));
  root.append(svg("text", { x: (L + W - R) / 2, y: H - 6, "text-anchor": "middle" }, "price per edit (USD)"));
  root.append(svg("text", { x: 12, y: (T + H - B) / 2, "text-anchor": "middle", transform: `rotate(-90 12 ${(T + H - B) / 2})` },
    state.data.quality ? state.data.quality.metric : "quality"));
  for (const m of pts) {
    const ci = m.quality_ci || [];
    if (ci[0] !== null && ci[0] !== undefined && ci[1] !== null && ci[1] !== undefined) {
      root.append(svg("line", { x1: sx(m.cost_usd), x2: sx(m.cost_usd), y1: sy(ci[0]), y2: sy(ci[1]), class: "ci" }));
    }
    const cls = m.role === "default" || m.role === "provisional" ? "default" : m.eligibility === "eligible" ? "alt" : "out";
    const dot = svg("circle", { cx: sx(m.cost_usd), cy: sy(m.quality), r: m.role === "default" ? 7 : 5, class: cls, "data-model": m.model });
    dot.append(svg("title", {}, `${m.model}: ${usd(m.cost_usd)}, quality ${q(m.quality)}`));
    root.append(dot);
    const right = sx(m.cost_usd) > W * 0.62;  // labels near the right edge go to the left of their point
    root.append(svg("text", {
      x: sx(m.cost_usd) + (right ? -9 : 9), y: sy(m.quality) - 7, class: "pt-label", "text-anchor": right ? "end" : "start",
    }, m.model));
  }
  box.append(root);
}

function renderModelChoice(op) {
  const sel = $("model-choice");
  const before = sel.value;
  sel.textContent = "";
  sel.append(el("option", { value: "" }, "tier " + state.tier + " routing (default, then fallbacks)"));
  for (const m of op.models) {
    if (m.eligibility === "excluded") continue;
    sel.append(el("option", { value: m.model }, m.model + " — " + usd(m.cost_usd)));
  }
  if ([...sel.options].some((o) => o.value === before)) sel.value = before;
}

// ---- edit --------------------------------------------------------------------------------------------

function showBefore() {
  const file = $("image-input").files[0];
  if (!file) return;
  const img = $("before");
  if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
  img.src = URL.createObjectURL(file);
}

async function runEdit(event) {
  event.preventDefault();
  const file = $("image-input").files[0];
  if (!file) { $("run-status").textContent = "choose an image first"; return; }
  const form = new FormData();
  form.append("image", file);
  form.append("prompt", $("prompt").value);
  form.append("operation", state.operation);
  const model = $("model-choice").value;
  if (model) form.append("model", model); else form.append("tier", state.tier);
  $("run").disabled = true;
  $("run-status").textContent = "editing…";
  const info = $("result-info");
  info.textContent = "";
  try {
    const r = await api(EDIT_URL, { method: "POST", body: form });
    $("after").src = "data:" + r.mime + ";base64," + r.image_base64;
    $("after").dataset.model = r.model;
    $("after-label").textContent = r.simulated ? "SIMULATED" : "";
    const rows = [
      ["model", r.model], ["tier", r.tier || "— (model chosen explicitly)"], ["cost", usd(r.cost_usd)],
      ["latency", ms(r.latency_ms)], ["size", r.width && r.height ? r.width + "×" + r.height : "—"],
    ];
    for (const fb of r.fallbacks || []) rows.push(["fell back from", `${fb.model}: ${fb.category} (charge ${fb.charge})`]);
    for (const n of r.notes || []) rows.push(["note", n]);
    for (const [k, v] of rows) { info.append(el("dt", {}, k)); info.append(el("dd", {}, v)); }
    $("run-status").textContent = "done";
    showError("");
  } catch (e) {
    $("run-status").textContent = "failed";
    showError((e.category ? e.category + ": " : "") + e.message);
  } finally {
    $("run").disabled = false;
  }
}

// ---- start -------------------------------------------------------------------------------------------

async function load() {
  try {
    const d = await api(MODELS_URL);
    state.data = d;
    const tiers = Object.keys(d.tiers);
    if (!tiers.includes(state.tier)) state.tier = tiers.includes(d.default_tier) ? d.default_tier : tiers[0];
    renderHeader(d);
    selectTier(state.tier);
    showError("");
    document.body.dataset.ready = "1";
  } catch (e) {
    showError((e.category ? e.category + ": " : "") + e.message);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("operation").addEventListener("change", (e) => { state.operation = e.target.value; renderSelection(); });
  $("image-input").addEventListener("change", showBefore);
  $("edit-form").addEventListener("submit", runEdit);
  $("token-box").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem("evalkit-serve-token", $("token").value.trim());
    $("token-box").hidden = true;
    load();
  });
  load();
});
