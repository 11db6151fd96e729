// overlay's dashboard: the fleet's GPUs and the jobs by state, re-read from the API every 2 s.
// Plain DOM building with textContent: job ids, commands and reasons are user data, never HTML.
"use strict";

const REFRESH_MS = 2000;
// Active states first, with room for many; finished ones show the latest few.
const JOB_STATES = [
  ["RUNNING", 200], ["PLACED", 200], ["QUEUED", 200], ["FAILED", 10], ["DONE", 10], ["CANCELLED", 10],
];
const TOKEN_KEY = "overlay.token";

class AuthNeeded extends Error {}

async function getJson(path) {
  const token = localStorage.getItem(TOKEN_KEY);
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  const response = await fetch(path, { headers, cache: "no-store" });
  if (response.status === 401 || response.status === 403) throw new AuthNeeded();
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

function bar(fraction, label, kind) {
  const pct = Math.max(0, Math.min(1, fraction || 0)) * 100;
  return el("div", { className: `bar ${kind}`, title: label },
    el("div", { className: "fill", style: `width: ${pct.toFixed(1)}%` }), el("span", {}, label));
}

function ago(seconds) {
  if (seconds === null || seconds === undefined) return "?";
  if (seconds < 60) return `${seconds.toFixed(1)}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m`;
  return `${Math.floor(seconds / 3600)}h${String(Math.floor((seconds % 3600) / 60)).padStart(2, "0")}m`;
}

function since(iso) {
  return iso ? ago((Date.now() - Date.parse(iso)) / 1000) : "-";
}

// Running jobs whose GPUs are all idle (/api/efficiency/idle), by job id: their GPU bars say so.
let idleJobs = new Map();

function gpuRow(node, gpu) {
  const gib = (mib) => (mib / 1024).toFixed(1);
  const memory = `${gib(gpu.memory_used_mb)} / ${gib(gpu.memory_total_mb)} GiB`;
  const idle = gpu.job_id ? idleJobs.get(gpu.job_id) : undefined;
  const held = idle ? `${gpu.job_id} · idle ${ago(idle.idle_seconds)}` : gpu.job_id;
  const holder = gpu.job_id
    ? el("span", { className: idle ? "holder idle" : "holder", title: held, "data-job": gpu.job_id }, held)
    : el("span", { className: "holder free" }, "free");
  const util = `util ${gpu.utilization_gpu_pct}%${idle ? " · IDLE" : ""}`;
  return el("div", { className: "gpu", "data-gpu": `${node.name}/${gpu.index}` },
    el("span", { title: gpu.uuid }, `GPU ${gpu.index}`),
    bar(gpu.utilization_gpu_pct / 100, util, idle ? "util idle" : "util"),
    bar(gpu.memory_total_mb ? gpu.memory_used_mb / gpu.memory_total_mb : 0, memory, "mem"),
    el("span", {}, gpu.temperature_c === null ? "-" : `${gpu.temperature_c}°C`),
    holder);
}

function nodeCard(node) {
  const labels = Object.entries(node.labels || {})
    .filter(([key]) => !key.startsWith("gpu.")).map(([k, v]) => `${k}=${v}`).join(" ");
  const models = [...new Set(node.gpus.map((g) => g.name))].join(", ");
  return el("article", { className: `node ${node.state}`, "data-node": node.name },
    el("h3", {}, node.name, el("span", { className: `badge ${node.state}` }, node.state),
      el("span", { className: "meta" },
        `${node.gpus.length} × ${models || "no GPU"} · ${labels || "no labels"} · seen ${ago(node.last_seen_age_s)} ago`)),
    ...node.gpus.map((gpu) => gpuRow(node, gpu)));
}

function renderNodes(nodes) {
  const box = document.getElementById("nodes");
  box.replaceChildren(nodes.length
    ? el("div", { className: "nodes" }, ...nodes.map(nodeCard))
    : el("p", { className: "empty" }, "No live nodes. Start an agent, or wait for its first heartbeat."));
}

function jobRow(job) {
  const where = !job.node ? "-" : job.gpus.length ? `${job.node} GPUs ${job.gpus.join(",")}` : job.node;
  const why = job.reason || (job.exit_code === null ? "" : `exit ${job.exit_code}`);
  return el("tr", { "data-job-row": job.job_id },
    el("td", { className: "mono" }, job.job_id), el("td", {}, where),
    el("td", {}, since(job.timestamps.enqueued)), el("td", {}, why),
    el("td", { className: "mono" }, job.request.cmd.join(" ")));
}

function jobTable(state, page) {
  const title = el("h3", {}, el("span", { className: `badge ${state}` }, state),
    el("span", { className: "meta" }, page.total > page.jobs.length
      ? `${page.total} (latest ${page.jobs.length} shown)` : `${page.total}`));
  if (!page.jobs.length) return el("div", { "data-state": state }, title);
  const head = el("tr", {}, ...["job", "where", "age", state === "QUEUED" ? "waiting because" : "reason", "cmd"]
    .map((h) => el("th", {}, h)));
  return el("div", { "data-state": state }, title, el("table", {}, el("thead", {}, head),
    el("tbody", {}, ...page.jobs.map(jobRow))));
}

function renderJobs(pages) {
  document.getElementById("jobs").replaceChildren(
    ...JOB_STATES.map(([state], i) => jobTable(state, pages[i])));
}

function renderSummary(nodes, pages) {
  const gpus = nodes.flatMap((n) => n.gpus);
  const free = nodes.filter((n) => n.state === "online").flatMap((n) => n.gpus).filter((g) => !g.job_id);
  const count = (state) => pages[JOB_STATES.findIndex(([s]) => s === state)].total;
  document.getElementById("summary").textContent =
    `${nodes.length} nodes · ${gpus.length} GPUs, ${free.length} free · ` +
    `${count("RUNNING")} running · ${count("QUEUED")} queued`;
}

function showStatus(text, isError) {
  const status = document.getElementById("status");
  status.textContent = text;
  status.className = isError ? "error" : "";
}

async function refresh() {
  try {
    const [idle, nodes, ...pages] = await Promise.all([
      getJson("/api/efficiency/idle").catch(() => ({ jobs: [] })),
      getJson("/api/nodes"),
      ...JOB_STATES.map(([state, limit]) => getJson(`/api/jobs?state=${state}&limit=${limit}`)),
    ]);
    idleJobs = new Map(idle.jobs.map((job) => [job.job_id, job]));
    renderNodes(nodes.nodes);
    renderJobs(pages);
    renderSummary(nodes.nodes, pages);
    document.getElementById("token-form").hidden = true;
    showStatus(`updated ${new Date().toLocaleTimeString()}`, false);
  } catch (error) {
    if (error instanceof AuthNeeded) document.getElementById("token-form").hidden = false;
    showStatus(error instanceof AuthNeeded ? "the API wants a token" : `cannot refresh: ${error.message}`, true);
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    localStorage.setItem(TOKEN_KEY, document.getElementById("token").value);
  });
  refresh();
});
