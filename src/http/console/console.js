// The ticket-ledger console: a page of plain JavaScript over the public API, with the caller's
// own token. Every value from a ticket or an event is set as text (textContent), never as HTML.
"use strict";

const STATUSES = ["READY", "PROCESSING", "ABNORMAL", "PAUSED", "CANCELED", "FINISHED"];
const OPERATIONS = ["PAUSE_ORDER", "CONTINUE_ORDER", "CANCEL_ORDER"];

const TEXT = {
  en: {
    tickets: "Tickets", audit: "Audit", signin: "Sign in", signout: "Sign out", language: "Language",
    token: "Token (X-Auth-Token)", project: "Project (x-project-id, optional)",
    status: "Status", all: "All", creator: "Creator", name: "Name contains", from: "Created from",
    to: "Created to", pageSize: "Page size", apply: "Apply", total: "Total", autoRefresh: "Auto-refresh",
    prev: "← Previous", next: "Next →", page: "Page", orderId: "Order", orderName: "Name",
    created: "Created", finished: "Finished", costs: "Duration", noTickets: "No ticket matches.",
    back: "← Back to the list", history: "History", batches: "Batches", instances: "Instances",
    statistics: "Statistics", operations: "Operations", confirm: "Really send {op} for this ticket?",
    sent: "{op} was sent to the executor; the ticket changes when it reports back.",
    seq: "Seq", type: "Type", time: "Time", source: "Source", outcome: "Outcome",
    deadLetters: "Dead letters", byReason: "Pending by reason", redrive: "Redrive selected",
    redriven: "Redriven: {n}", rebuild: "Rebuild", health: "Ingest health", select: "Select",
    connected: "Broker connected", lag: "Lag (events)", lagSeconds: "Lag (seconds)", viewInStep: "View in step",
    ready: "Ready", yes: "yes", no: "no", none: "none", batch: "Batch", instance: "Instance",
    message: "Message", rotation: "After a failure", count: "Count", loading: "Loading…",
    script: "Script", timeout: "Timeout", user: "Run as", params: "Parameters", phase: "Phase",
  },
  "zh-cn": {
    tickets: "工单", audit: "审计", signin: "登录", signout: "退出", language: "语言",
    token: "令牌（X-Auth-Token）", project: "项目（x-project-id，可选）",
    status: "状态", all: "全部", creator: "创建人", name: "名称包含", from: "创建时间起",
    to: "创建时间止", pageSize: "每页条数", apply: "应用", total: "总数", autoRefresh: "自动刷新",
    prev: "← 上一页", next: "下一页 →", page: "页", orderId: "工单号", orderName: "名称",
    created: "创建时间", finished: "结束时间", costs: "耗时", noTickets: "没有匹配的工单。",
    back: "← 返回列表", history: "事件历史", batches: "批次", instances: "实例",
    statistics: "统计", operations: "操作", confirm: "确定要对该工单执行 {op} 吗？",
    sent: "{op} 已发送给执行器；执行器上报后工单才会变化。",
    seq: "序号", type: "类型", time: "时间", source: "来源", outcome: "结果",
    deadLetters: "死信", byReason: "按原因统计（待处理）", redrive: "重新投递所选",
    redriven: "已重新投递：{n}", rebuild: "重建", health: "摄取状态", select: "选择",
    connected: "已连接消息服务器", lag: "落后（事件数）", lagSeconds: "落后（秒）", viewInStep: "视图已同步",
    ready: "就绪", yes: "是", no: "否", none: "无", batch: "批次", instance: "实例",
    message: "输出", rotation: "失败后", count: "数量", loading: "加载中…",
    script: "脚本", timeout: "超时", user: "执行用户", params: "参数", phase: "阶段",
  },
};

const state = { lang: sessionStorage.getItem("lang") || "en", canOperate: null, isAdmin: null, seen: new Map() };
let refreshTimer = null;

function t(key, vars) {
  let s = (TEXT[state.lang] || TEXT.en)[key] || TEXT.en[key] || key;
  for (const [k, v] of Object.entries(vars || {})) s = s.replace("{" + k + "}", String(v));
  return s;
}

/** An element with attributes and children; strings become text nodes, never HTML. */
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "on") for (const [ev, fn] of Object.entries(v)) e.addEventListener(ev, fn);
    else if (k === "text") e.textContent = String(v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function pad(n) { return String(n).padStart(2, "0"); }
/** ms since the epoch as local time, `2023-07-24 20:13:49`. */
function when(ms) {
  if (ms === null || ms === undefined) return "—";
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}
/** ms as `20.8 s`, `3.2 min`, `1.5 h`. */
function duration(ms) {
  if (ms === null || ms === undefined) return "—";
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  if (ms < 3600000) return `${(ms / 60000).toFixed(1)} min`;
  return `${(ms / 3600000).toFixed(1)} h`;
}
function timeCell(ms) { return el("span", { title: ms === null || ms === undefined ? null : `${ms} ms since the epoch (${new Date(ms).toISOString()})` }, when(ms)); }
function durationCell(ms) { return el("span", { title: ms === null || ms === undefined ? null : `${ms} ms` }, duration(ms)); }
function statusBadge(s) { return el("span", { class: `status ${STATUSES.includes(s) || ["CANCELED", "FINISHED"].includes(s) ? s : ""}` }, s); }

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

/** A request to the API with the session's token, project and language. */
async function api(path, opts) {
  const headers = { "X-Auth-Token": sessionStorage.getItem("token") || "", "X-Language": state.lang };
  const project = sessionStorage.getItem("project");
  if (project) headers["x-project-id"] = project;
  if (opts && opts.body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method: (opts && opts.method) || "GET", headers, body: opts && opts.body !== undefined ? JSON.stringify(opts.body) : undefined });
  const text = await r.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = null; }
  if (!r.ok) throw new ApiError(r.status, body && body.error_code, body && body.error_msg ? `${body.error_code}: ${body.error_msg}` : `HTTP ${r.status}`);
  return body;
}

function showError(e) {
  const p = document.getElementById("error");
  if (!e) { p.hidden = true; p.textContent = ""; return; }
  p.textContent = e.message || String(e);
  p.hidden = false;
  if (e.status === 401) showLogin();
}

function show(id) {
  for (const s of ["login", "list-page", "ticket-page", "audit-page"]) document.getElementById(s).hidden = s !== id;
}

function showLogin() {
  show("login");
  document.getElementById("signout").hidden = true;
  document.getElementById("token").focus();
}

function applyLanguage() {
  document.documentElement.lang = state.lang === "zh-cn" ? "zh-CN" : "en";
  document.getElementById("lang").value = state.lang;
  const set = (id, key) => { document.getElementById(id).textContent = t(key); };
  set("nav-list", "tickets"); set("nav-audit", "audit"); set("signout", "signout"); set("lang-label", "language");
  set("login-title", "signin"); set("login-submit", "signin"); set("token-label", "token"); set("project-label", "project");
}

/** The hash route: `#/list?…`, `#/ticket/<uuid>`, `#/audit`. */
function route() {
  const h = location.hash.replace(/^#/, "") || "/list";
  const [path, query] = h.split("?");
  return { path, params: new URLSearchParams(query || "") };
}

async function render() {
  clearTimeout(refreshTimer);
  refreshTimer = null;
  showError(null);
  if (!sessionStorage.getItem("token")) return showLogin();
  document.getElementById("signout").hidden = false;
  const { path, params } = route();
  for (const a of document.querySelectorAll("header nav a")) a.removeAttribute("aria-current");
  try {
    await probeRights();
    if (path.startsWith("/ticket/")) return await renderTicket(decodeURIComponent(path.slice(8)), params);
    if (path === "/audit") { document.getElementById("nav-audit").setAttribute("aria-current", "page"); return await renderAudit(); }
    document.getElementById("nav-list").setAttribute("aria-current", "page");
    await renderList(params);
  } catch (e) { showError(e); }
}

/** What the principal may do, asked of the public API itself: the dead-letter list answers an
 *  admin, and an operation with an empty body is refused as a bad body (400) only for a caller
 *  who may operate (403 otherwise); neither changes anything. */
async function probeRights() {
  if (state.isAdmin === null) {
    try { await api("/v1/ledger/dead-letters?limit=1"); state.isAdmin = true; }
    catch (e) { if (e.status === 401) throw e; state.isAdmin = false; }
  }
  document.getElementById("nav-audit").hidden = !state.isAdmin;
}

async function canOperate(uuid) {
  if (state.canOperate !== null) return state.canOperate;
  try { await api(`/v1/job/script/orders/${encodeURIComponent(uuid)}/operation`, { method: "PUT", body: {} }); state.canOperate = true; }
  catch (e) { state.canOperate = e.status === 400; }
  return state.canOperate;
}

function listQuery(params, extra) {
  const q = new URLSearchParams();
  for (const k of ["status", "creator", "name_like", "start_time", "end_time"]) if (params.get(k)) q.set(k, params.get(k));
  q.set("limit", params.get("limit") || "10");
  for (const [k, v] of Object.entries(extra || {})) { if (v === null) q.delete(k); else q.set(k, v); }
  return q;
}

function toLocalInput(ms) {
  if (!ms) return "";
  const d = new Date(Number(ms));
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

async function renderList(params, refreshing) {
  const page = document.getElementById("list-page");
  const markers = (params.get("markers") || "").split(",").filter(Boolean);
  const marker = markers.length ? markers[markers.length - 1] : null;
  const q = listQuery(params, { marker });
  const [body, ...totals] = await Promise.all([
    api(`/v1/job/script/orders?${q}`),
    ...STATUSES.map((s) => api(`/v1/job/script/orders?${listQuery(params, { status: s, limit: "1", marker: null })}`)),
  ]);
  const data = body.data;
  const go = (next) => { location.hash = `#/list?${next}`; };
  const here = (extra) => { const n = listQuery(params, extra); if (markers.length) n.set("markers", markers.join(",")); return n; };

  const field = (id, label, input) => el("div", {}, el("label", { for: id }, label), input);
  const form = el("form", { class: "filters", id: "filters", on: { submit: (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    const n = new URLSearchParams();
    if (params.get("status")) n.set("status", params.get("status"));
    for (const k of ["creator", "name_like"]) if (f.get(k)) n.set(k, f.get(k));
    for (const k of ["start_time", "end_time"]) if (f.get(k)) n.set(k, String(new Date(f.get(k)).getTime()));
    n.set("limit", f.get("limit"));
    go(n);
  } } },
    field("f-creator", t("creator"), el("input", { id: "f-creator", name: "creator", value: params.get("creator") || "" })),
    field("f-name", t("name"), el("input", { id: "f-name", name: "name_like", value: params.get("name_like") || "" })),
    field("f-from", t("from"), el("input", { id: "f-from", name: "start_time", type: "datetime-local", value: toLocalInput(params.get("start_time")) })),
    field("f-to", t("to"), el("input", { id: "f-to", name: "end_time", type: "datetime-local", value: toLocalInput(params.get("end_time")) })),
    field("f-limit", t("pageSize"), el("select", { id: "f-limit", name: "limit" }, ...["10", "20", "50", "100"].map((n) => el("option", { value: n, selected: (params.get("limit") || "10") === n }, n)))),
    el("button", { type: "submit", id: "apply" }, t("apply")));

  const current = params.get("status");
  const sum = totals.reduce((a, b) => a + b.data.total, 0);
  const chips = el("div", { class: "chips", role: "group", "aria-label": t("status") },
    el("button", { type: "button", class: "chip", "aria-pressed": String(!current), "data-status": "", on: { click: () => go(listQuery(params, { status: null, marker: null })) } }, `${t("all")} (${sum})`),
    ...STATUSES.map((s, i) => el("button", { type: "button", class: "chip", "aria-pressed": String(current === s), "data-status": s,
      on: { click: () => go(listQuery(params, { status: s, marker: null })) } }, `${s} (${totals[i].data.total})`)));
  const max = Math.max(1, ...totals.map((x) => x.data.total));
  const chart = el("div", { class: "chart", role: "img", "aria-label": STATUSES.map((s, i) => `${s} ${totals[i].data.total}`).join(", ") },
    ...STATUSES.map((s, i) => el("div", { class: "bar" }, el("span", {}, s),
      el("span", { class: "fill", style: null, "data-width": String(totals[i].data.total / max) }), el("span", {}, String(totals[i].data.total)))));

  const refresh = el("input", { type: "checkbox", id: "auto-refresh", checked: params.get("refresh") === "1" });
  refresh.addEventListener("change", () => go(here({ refresh: refresh.checked ? "1" : null })));

  // New and changed tickets are marked only when the auto-refresh redraws the page.
  const firstLook = !refreshing;
  const rows = data.data.map((tk) => {
    const sig = `${tk.status}|${tk.gmt_finished}`;
    const before = state.seen.get(tk.order_id);
    const mark = firstLook ? "" : before === undefined ? "new" : before !== sig ? "changed" : "";
    state.seen.set(tk.order_id, sig);
    return el("tr", { class: mark || null, "data-order-id": tk.order_id },
      el("td", {}, String(tk.order_id)),
      el("td", {}, el("a", { href: `#/ticket/${encodeURIComponent(tk.execute_uuid)}` }, tk.order_name)),
      el("td", {}, statusBadge(tk.status)),
      el("td", { class: "hide-narrow" }, tk.creator),
      el("td", {}, timeCell(tk.gmt_created)),
      el("td", { class: "hide-narrow" }, timeCell(tk.gmt_finished)),
      el("td", {}, durationCell(tk.execute_costs)));
  });
  const table = data.data.length
    ? el("div", { class: "table-wrap" }, el("table", { id: "tickets" },
        el("thead", {}, el("tr", {}, ...[["orderId"], ["orderName"], ["status"], ["creator", "hide-narrow"], ["created"], ["finished", "hide-narrow"], ["costs"]]
          .map(([k, c]) => el("th", { scope: "col", class: c || null }, t(k))))),
        el("tbody", {}, rows)))
    : el("p", { class: "muted", id: "empty" }, t("noTickets"));
  const last = data.data.length ? data.data[data.data.length - 1].order_id : null;
  const pager = el("div", { class: "pager" },
    el("button", { type: "button", id: "prev", class: "secondary", disabled: !markers.length, on: { click: () => {
      const n = listQuery(params, { marker: null }); const m = markers.slice(0, -1); if (m.length) n.set("markers", m.join(",")); go(n); } } }, t("prev")),
    el("span", { id: "page-no" }, `${t("page")} ${markers.length + 1}`),
    el("button", { type: "button", id: "next", class: "secondary", disabled: last === null || data.data.length < Number(q.get("limit")), on: { click: () => {
      const n = listQuery(params, { marker: null }); n.set("markers", [...markers, last].join(",")); go(n); } } }, t("next")));

  page.replaceChildren(el("h1", {}, t("tickets")), form, chips,
    el("div", { class: "summary" }, el("strong", { id: "total" }, `${t("total")}: ${data.total}`),
      el("label", { for: "auto-refresh" }, refresh, ` ${t("autoRefresh")}`)),
    chart, table, pager);
  // Widths through the CSSOM: the CSP forbids inline style attributes.
  for (const f of page.querySelectorAll(".fill")) f.style.width = `${Number(f.dataset.width) * 100}%`;
  show("list-page");
  clearTimeout(refreshTimer);
  if (refresh.checked) refreshTimer = setTimeout(() => renderList(route().params, true).catch(showError), 5000);
}

function fields(pairs) {
  return el("dl", { class: "fields" }, ...pairs.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v === null || v === undefined ? "—" : v)]));
}

function timeline(events) {
  return el("ol", { class: "timeline", id: "timeline" }, ...events.map((e) => el("li", { class: e.outcome, "data-seq": e.seq },
    el("div", {}, el("strong", {}, `#${e.seq} `), e.type.replace("coc.job.script.", ""), " · ", el("span", { class: "status" }, e.outcome)),
    el("div", { class: "muted" }, timeCell(Date.parse(e.time)), " · ", e.source, " · ", e.id),
    e.reason ? el("div", { class: "reason" }, `${e.reason_code}: ${e.reason}`) : null,
    e.note ? el("div", {}, e.note) : null)));
}

async function renderTicket(uuid, params) {
  const page = document.getElementById("ticket-page");
  const enc = encodeURIComponent(uuid);
  const info = (await api(`/v1/job/script/orders/${enc}`)).data;
  const [batches, stats] = await Promise.all([api(`/v1/job/script/orders/${enc}/batches`), api(`/v1/job/script/orders/${enc}/statistics`)]);
  const p = info.properties;
  const parts = [el("p", {}, el("a", { href: "#/list", id: "back" }, t("back"))),
    el("h1", { id: "ticket-title" }, `${info.order_name} (#${info.order_id})`),
    el("div", { class: "card" }, fields([
      ["execute_uuid", info.execute_uuid], [t("status"), statusBadge(info.status)], [t("creator"), info.creator],
      [t("created"), timeCell(info.gmt_created)], [t("finished"), timeCell(info.gmt_finished)], [t("costs"), durationCell(info.execute_costs)],
      ["job_type", info.job_type], ["region_ids", p.region_ids],
      [t("script"), p.script_name ? `${p.script_name} (${p.script_uuid || "—"}, v${p.script_version_uuid ?? "—"} ${p.script_version_name || ""})` : null],
      [t("timeout"), p.execute_param ? `${p.execute_param.timeout ?? "—"} s` : null], [t("user"), p.execute_param ? p.execute_param.execute_user : null],
      [t("params"), p.execute_param && p.execute_param.script_params.length ? p.execute_param.script_params.map((s) => `${s.param_name}=${s.param_value}`).join(", ") : null],
      [t("batch"), p.current_execute_batch_index]]))];
  if (!["CANCELED", "FINISHED"].includes(info.status) && await canOperate(uuid)) {
    const status = el("p", { role: "status", id: "op-status" });
    parts.push(el("h2", {}, t("operations")), el("div", { class: "ops" }, ...OPERATIONS.map((op) => el("button", { type: "button", class: op === "CANCEL_ORDER" ? "danger" : "secondary", "data-op": op,
      on: { click: async () => {
        if (!confirm(t("confirm", { op }))) return;
        try { await api(`/v1/job/script/orders/${enc}/operation`, { method: "PUT", body: { operation_type: op } }); status.textContent = t("sent", { op }); }
        catch (e) { showError(e); }
      } } }, op))), status);
  }
  if (batches.data.length) {
    parts.push(el("h2", {}, t("statistics")), el("div", { class: "table-wrap" }, el("table", { id: "statistics" },
      el("thead", {}, el("tr", {}, el("th", {}, t("status")), el("th", {}, t("count")), el("th", {}, t("batches")))),
      el("tbody", {}, stats.data.execute_statistics.map((s) => el("tr", {}, el("td", {}, statusBadge(s.instance_status)), el("td", {}, String(s.instance_count)), el("td", {}, s.batch_indexes.join(", "))))))));
    const chosen = Number(params.get("batch") || batches.data[0].batch_index);
    parts.push(el("h2", {}, t("batches")), el("div", { class: "chips", role: "group", "aria-label": t("batches") },
      ...batches.data.map((b) => el("button", { type: "button", class: "chip", "aria-pressed": String(b.batch_index === chosen),
        on: { click: () => { location.hash = `#/ticket/${enc}?batch=${b.batch_index}`; } } }, `${t("batch")} ${b.batch_index} · ${b.total_instances} · ${b.rotation_strategy}`))));
    const imarkers = (params.get("imarkers") || "").split(",").filter(Boolean);
    const iq = new URLSearchParams({ limit: "20" });
    if (imarkers.length) iq.set("marker", imarkers[imarkers.length - 1]);
    const detail = (await api(`/v1/job/script/orders/${enc}/batches/${chosen}?${iq}`)).data;
    const goI = (m) => { const n = new URLSearchParams({ batch: String(chosen) }); if (m.length) n.set("imarkers", m.join(",")); location.hash = `#/ticket/${enc}?${n}`; };
    const lastId = detail.execute_instances.length ? detail.execute_instances[detail.execute_instances.length - 1].id : null;
    parts.push(el("h2", {}, `${t("instances")} (${detail.total_instances})`), el("div", { class: "table-wrap" }, el("table", { id: "instances" },
      el("thead", {}, el("tr", {}, ...["instance", "status", "created", "finished", "costs", "message"].map((k) => el("th", { scope: "col" }, t(k))))),
      el("tbody", {}, detail.execute_instances.map((i) => el("tr", {},
        el("td", {}, `${i.id} ${i.target_instance.resource_id || ""}`), el("td", {}, statusBadge(i.status)), el("td", {}, timeCell(i.gmt_created)),
        el("td", {}, timeCell(i.gmt_finished)), el("td", {}, durationCell(i.execute_costs)), el("td", {}, i.message || "")))))),
      el("div", { class: "pager" },
        el("button", { type: "button", class: "secondary", disabled: !imarkers.length, on: { click: () => goI(imarkers.slice(0, -1)) } }, t("prev")),
        el("button", { type: "button", class: "secondary", disabled: detail.execute_instances.length < 20, on: { click: () => goI([...imarkers, lastId]) } }, t("next"))));
  }
  parts.push(el("h2", {}, t("history")), timeline(info.events));
  page.replaceChildren(...parts);
  show("ticket-page");
}

/** One gauge of `/metrics` (Prometheus text), with the session's token; null if absent. */
async function metric(name) {
  const r = await fetch("/metrics", { headers: { "X-Auth-Token": sessionStorage.getItem("token") || "" } });
  if (!r.ok) return null;
  const line = (await r.text()).split("\n").find((l) => l.startsWith(name + " "));
  return line ? Number(line.slice(name.length + 1)) : null;
}

async function renderAudit() {
  const page = document.getElementById("audit-page");
  const [dl, replay, ready, lagSeconds] = await Promise.all([api("/v1/ledger/dead-letters?limit=200"), api("/v1/ledger/replay"),
    fetch("/readyz").then((r) => r.json()), metric("ticket_ledger_lag_seconds")]);
  const d = dl.data;
  const result = el("p", { role: "status", id: "redrive-status" });
  const rows = d.dead_letters.map((x) => el("tr", {},
    el("td", {}, el("input", { type: "checkbox", "aria-label": `${t("select")} ${x.seq}`, value: String(x.seq), class: "pick" })),
    el("td", {}, String(x.seq)), el("td", {}, x.subject), el("td", {}, el("strong", {}, x.code), el("div", { class: "muted" }, x.reason)),
    el("td", {}, el("pre", { class: "payload" }, x.payload !== undefined ? x.payload : `hex: ${x.payload_hex}`))));
  page.replaceChildren(el("h1", {}, t("audit")),
    el("h2", {}, t("health")), el("div", { class: "card" }, fields([
      [t("ready"), ready.ready ? t("yes") : t("no")], [t("connected"), ready.nats_connected ? t("yes") : t("no")],
      [t("lag"), String(ready.lag)], [t("lagSeconds"), lagSeconds === null ? "—" : String(lagSeconds)], [t("viewInStep"), ready.view_seq === ready.applied_seq ? t("yes") : t("no")],
      ["applied_seq / stream_last_seq", `${ready.applied_seq} / ${ready.stream_last_seq}`]])),
    el("h2", {}, t("rebuild")), el("div", { class: "card" }, fields(Object.entries(replay.data || {}).map(([k, v]) => [k, typeof v === "object" ? JSON.stringify(v) : String(v)]))),
    el("h2", {}, t("deadLetters")),
    el("p", { id: "reasons" }, Object.keys(d.pending_by_reason).length ? Object.entries(d.pending_by_reason).map(([k, v]) => `${k}: ${v}`).join(" · ") : t("none")),
    el("div", { class: "table-wrap" }, el("table", { id: "dead-letters" },
      el("thead", {}, el("tr", {}, ...["select", "seq", "subject", "outcome", "message"].map((k) => el("th", { scope: "col" }, t(k))))), el("tbody", {}, rows))),
    el("div", { class: "pager" }, el("button", { type: "button", id: "redrive", on: { click: async () => {
      const seqs = [...page.querySelectorAll("input.pick:checked")].map((c) => Number(c.value));
      try { const r = await api("/v1/ledger/redrive", { method: "POST", body: { seqs } }); result.textContent = t("redriven", { n: r.data.redriven.length }); }
      catch (e) { showError(e); }
    } } }, t("redrive"))), result);
  show("audit-page");
}

document.getElementById("login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem("token", document.getElementById("token").value);
  sessionStorage.setItem("project", document.getElementById("project").value.trim());
  state.isAdmin = null; state.canOperate = null; state.seen.clear();
  document.getElementById("token").value = "";
  if (!location.hash || location.hash === "#/login") location.hash = "#/list"; else render();
});
document.getElementById("signout").addEventListener("click", () => {
  sessionStorage.removeItem("token"); sessionStorage.removeItem("project");
  state.isAdmin = null; state.canOperate = null; showLogin();
});
document.getElementById("lang").addEventListener("change", (ev) => {
  state.lang = ev.target.value; sessionStorage.setItem("lang", state.lang); applyLanguage(); render();
});
window.addEventListener("hashchange", render);
applyLanguage();
render();
