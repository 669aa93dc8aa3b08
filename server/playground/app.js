// moe-avatar playground: a GenerateRequest (proto JSON) goes to POST /v1/generate; the answer
// is a stream of JSON lines (one GenerateResponse each: started, progress, reading, texture,
// chunk, done, or a final error). What the model reads from the prompt is shown as a chip per
// attribute family (POST /v1/encode-text while typing, the stream's reading once generating). Textures are shown as soon as their last chunk arrives.
// Plain JS, no build step, no dependencies.
"use strict";

const $ = (id) => document.getElementById(id);

const EXAMPLES = [
  "pink hair, twin tails",
  "silver bob, headphones, smiling",
  "blue hair, glasses",
  "蓝发猫耳少女",
  "戴墨镜的蓝发少女",
];
const STAGES = {
  STAGE_QUEUED: [0.05, "queued"],
  STAGE_ENCODING_TEXT: [0.1, "encoding the prompt"],
  STAGE_GENERATING: [0.2, "generating"],
  STAGE_SCORING: [0.5, "scoring with CLIP"],
  STAGE_ENCODING_TEXTURES: [0.7, "encoding textures"],
};
const MIME = { TEXTURE_FORMAT_PNG: "image/png", TEXTURE_FORMAT_WEBP: "image/webp" };
const EXTENSION = { TEXTURE_FORMAT_PNG: "png", TEXTURE_FORMAT_WEBP: "webp", TEXTURE_FORMAT_RGBA8: "rgba" };
// Field names in error details (proto names) -> the control to highlight.
const FIELD_CONTROLS = {
  prompt: "prompt", count: "count", seed: "seed", psi: "psi", rerank: "rerank", model: "model",
  model_version: "model", "output.format": "format", "output.size": "size", "output.filter": "filter",
};

let controller = null; // AbortController of the request in flight
let objectUrls = [];

// ------------------------------------------------------------------------------------
// Small helpers

function authHeaders(extra = {}) {
  const token = $("token").value.trim();
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

function slug(text) {
  const s = text.trim().toLowerCase().replace(/[^\p{L}\p{N}]+/gu, "_").replace(/^_+|_+$/g, "");
  return s.slice(0, 40) || "avatar";
}

function base64ToBytes(b64) {
  const raw = atob(b64 || "");
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes;
}

function concat(parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const p of parts) { out.set(p, offset); offset += p.length; }
  return out;
}

function equalBytes(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** true / false, or null where SubtleCrypto is missing (plain http on a non-local host). */
async function sha256Matches(bytes, expected) {
  if (!window.crypto || !crypto.subtle) return null;
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return equalBytes(digest, expected);
}

/** Raw RGBA8 -> a PNG blob for display (the download stays the server's raw bytes). */
function rgbaToPngBlob(bytes, width, height, bottomUp) {
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const rows = new Uint8ClampedArray(bytes.length);
  const stride = width * 4;
  for (let y = 0; y < height; y++) {
    const src = (bottomUp ? height - 1 - y : y) * stride;
    rows.set(bytes.subarray(src, src + stride), y * stride);
  }
  canvas.getContext("2d").putImageData(new ImageData(rows, width, height), 0, 0);
  return new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
}

async function* jsonLines(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let pending = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    pending += decoder.decode(value, { stream: true });
    let newline;
    while ((newline = pending.indexOf("\n")) >= 0) {
      const line = pending.slice(0, newline).trim();
      pending = pending.slice(newline + 1);
      if (line) yield JSON.parse(line);
    }
  }
  pending += decoder.decode();
  if (pending.trim()) yield JSON.parse(pending);
}

// ------------------------------------------------------------------------------------
// Status, errors

function setStatus(text, fraction = null) {
  $("status").textContent = text;
  if (fraction !== null) $("progress").value = fraction;
}

function clearError() {
  $("error").hidden = true;
  $("error").replaceChildren();
  for (const el of document.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
}

/** Shows a bridge error ({code, message, details, requestId}) or any thrown Error. */
function showError(error) {
  const box = $("error");
  box.replaceChildren();
  const title = document.createElement("strong");
  title.textContent = error.code ? error.code.replaceAll("_", " ").toLowerCase() : "error";
  box.append(title);
  if (!Array.isArray(error.details) || !error.details.length) {
    const message = document.createElement("p");
    message.textContent = error.message || String(error);
    box.append(message);
  } else {
    const list = document.createElement("ul");
    for (const d of error.details) {
      const item = document.createElement("li");
      const field = document.createElement("code");
      field.textContent = d.field;
      item.append(field, ` ${d.description}`);
      list.append(item);
      const control = $(FIELD_CONTROLS[d.field] || "");
      if (control) control.setAttribute("aria-invalid", "true");
    }
    box.append(list);
  }
  if (error.requestId) {
    const id = document.createElement("small");
    id.textContent = `request id ${error.requestId}`;
    box.append(id);
  }
  box.hidden = false;
}

// ------------------------------------------------------------------------------------
// The request

function buildRequest() {
  const body = { prompt: $("prompt").value };
  const count = Number($("count").value);
  body.count = Number.isInteger(count) ? count : $("count").value; // the server names a bad value
  const seed = $("seed").value.trim();
  if (seed !== "") body.seed = seed; // uint64: a string in proto JSON
  body.psi = Number($("psi").value);
  const rerank = Number($("rerank").value);
  if (rerank > 1) body.rerank = rerank;
  const size = Number($("size").value);
  body.output = { format: $("format").value };
  if (size) Object.assign(body.output, { size, filter: $("filter").value });
  return Object.assign(body, modelFields());
}

/** The model picked in the dropdown as request fields ({} = the server's default). */
function modelFields() {
  if (!$("model").value) return {};
  const { name, version } = JSON.parse($("model").value);
  return { model: name, modelVersion: version };
}

/** A shell word in single quotes: ' becomes '\'' (close, escaped quote, reopen). */
function shellQuote(text) {
  return `'${text.replaceAll("'", "'\\''")}'`;
}

function showRequest() {
  $("request-json").textContent =
    `curl -N -H 'Content-Type: application/json' -d ${shellQuote(JSON.stringify(buildRequest()))} ${location.origin}/v1/generate`;
}

function clearGrid() {
  for (const url of objectUrls) URL.revokeObjectURL(url);
  objectUrls = [];
  $("grid").replaceChildren();
  $("empty").hidden = false;
}

function makeCells(count) {
  const grid = $("grid");
  grid.replaceChildren();
  $("empty").hidden = true;
  const cells = [];
  for (let i = 0; i < count; i++) {
    const cell = document.createElement("figure");
    cell.className = "cell pending";
    const frame = document.createElement("div");
    frame.className = "frame";
    const caption = document.createElement("figcaption");
    caption.textContent = "…";
    cell.append(frame, caption);
    grid.append(cell);
    cells.push(cell);
  }
  return cells;
}

async function showTexture(cell, header, bytes, prompt, verified) {
  const format = header.format || "TEXTURE_FORMAT_PNG";
  const width = header.width || 0;
  const height = header.height || 0;
  const display = format === "TEXTURE_FORMAT_RGBA8"
    ? await rgbaToPngBlob(bytes, width, height, header.rowOrder === "ROW_ORDER_BOTTOM_UP")
    : new Blob([bytes], { type: MIME[format] });
  const displayUrl = URL.createObjectURL(display);
  const downloadUrl = format === "TEXTURE_FORMAT_RGBA8"
    ? URL.createObjectURL(new Blob([bytes], { type: "application/octet-stream" })) : displayUrl;
  objectUrls.push(displayUrl, downloadUrl);

  const seed = header.seed ?? "";
  const img = document.createElement("img");
  img.alt = `avatar for “${prompt}”, seed ${seed}`;
  img.src = displayUrl;
  img.width = 160;
  img.height = 160;
  img.dataset.seed = seed;
  cell.querySelector(".frame").replaceChildren(img);

  const caption = cell.querySelector("figcaption");
  caption.replaceChildren();
  const meta = document.createElement("span");
  meta.className = "meta";
  const seedLine = document.createElement("b");
  seedLine.textContent = `seed ${seed}`;
  const scoreLine = document.createElement("span");
  scoreLine.textContent = `CLIP ${(header.clipScore || 0).toFixed(3)} · ${width}px`;
  meta.append(seedLine, scoreLine);
  meta.title = verified === null ? "SHA-256 not checked (SubtleCrypto needs https or localhost)"
    : "SHA-256 matches the server's header";
  const link = document.createElement("a");
  link.className = "download";
  link.href = downloadUrl;
  link.download = `${slug(prompt)}_${seed || header.index || 0}.${EXTENSION[format]}`;
  link.textContent = `⤓ ${EXTENSION[format]}`;
  link.title = `download ${link.download}`;
  cell.querySelector(".frame").append(link);
  caption.append(meta);
  cell.classList.remove("pending");
  cell.dataset.verified = String(verified);
}

/** What one response stream has shown so far. */
function newRun(prompt) {
  return { prompt, cells: [], current: null, shown: 0, done: false };
}

/** One GenerateResponse (proto JSON) of a stream, from POST /v1/generate or the Edit WebSocket. */
async function onEvent(run, event) {
  if (event.error) throw event.error;
  if (event.started) {
    const s = event.started;
    run.cells = makeCells(s.textureCount || 0);
    setStatus(`${s.model} ${s.modelVersion} · seed ${s.seed} · ψ ${(s.psi ?? 0).toFixed(2)}`, 0.04);
  } else if (event.reading) {
    showReading(event.reading);
  } else if (event.progress) {
    const [fraction, label] = STAGES[event.progress.stage] || [null, event.progress.stage];
    setStatus(`${label}…`, fraction);
  } else if (event.texture) {
    run.current = { header: event.texture, parts: [] };
  } else if (event.chunk) {
    if (!run.current) throw new Error("chunk without a texture header");
    run.current.parts.push(base64ToBytes(event.chunk.data));
    if (!event.chunk.last) return;
    const bytes = concat(run.current.parts);
    const header = run.current.header;
    run.current = null;
    if (bytes.length !== Number(header.totalBytes || 0)) {
      throw new Error(`texture ${header.index || 0}: got ${bytes.length} bytes, header says ${header.totalBytes}`);
    }
    const verified = await sha256Matches(bytes, base64ToBytes(header.sha256));
    if (verified === false) throw new Error(`texture ${header.index || 0}: SHA-256 does not match its header`);
    await showTexture(run.cells[header.index || 0], header, bytes, run.prompt, verified);
    run.shown++;
    setStatus(`${run.shown} / ${run.cells.length} textures`, 0.7 + 0.3 * run.shown / Math.max(1, run.cells.length));
  } else if (event.done) {
    run.done = true;
    setStatus(`${event.done.textureCount || 0} avatars in ${(event.done.elapsedSeconds || 0).toFixed(2)} s`, 1);
  }
}

// ------------------------------------------------------------------------------------
// What the model reads: a chip per family, "hair color: pink 98 %" where the prompt states it,
// "eye color: random" where it leaves it open (proto JSON leaves `stated: false` out).

function showReading(reading) {
  const box = $("reading");
  box.replaceChildren();
  const families = (reading && reading.families) || [];
  const ordered = families.filter((f) => f.stated).concat(families.filter((f) => !f.stated));
  for (const f of ordered) {
    const chip = document.createElement("span");
    chip.className = f.stated ? "chip read stated" : "chip read open";
    const name = f.family.replace(/_/g, " ");
    chip.textContent = f.stated ? `${name}: ${f.value} ${Math.round(100 * (f.valueProbability || 0))} %` : `${name}: random`;
    chip.title = `P(stated) ${(f.statedProbability || 0).toFixed(2)}; best guess ${f.value} ` +
      `(${(f.valueProbability || 0).toFixed(2)})`;
    box.append(chip);
  }
}

let readTimer = 0;
let readSequence = 0;

/** Debounced POST /v1/encode-text for the prompt being typed; only the newest answer is shown. */
function readPrompt() {
  clearTimeout(readTimer);
  readTimer = setTimeout(async () => {
    const prompt = $("prompt").value.trim();
    const mine = ++readSequence;
    if (!prompt) { showReading(null); return; }
    try {
      const response = await fetch("/v1/encode-text", {
        method: "POST", headers: authHeaders({ "Content-Type": "application/json" }),
        body: JSON.stringify({ prompt, ...modelFields() }),
      });
      if (!response.ok || mine !== readSequence) return;
      const body = await response.json();
      showReading(body.reading);
    } catch (error) { /* reading is a hint; generation reports errors */ }
  }, 300);
}

// ------------------------------------------------------------------------------------
// Live mode: every edit goes over one WebSocket Edit session (GET /v1/edit). The server works
// on the newest request only and ends a replaced one with a "superseded" event; frames for
// older sequences are ignored here.

const live = { socket: null, sequence: 0, run: null, timer: 0, chain: Promise.resolve() };

function liveSocket() {
  if (live.socket && live.socket.readyState <= WebSocket.OPEN) return live.socket;
  const token = $("token").value.trim();
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  live.socket = new WebSocket(`${scheme}://${location.host}/v1/edit${token ? `?access_token=${encodeURIComponent(token)}` : ""}`);
  live.socket.onmessage = (message) => {
    const frame = JSON.parse(message.data);
    if (Number(frame.sequence || 0) !== live.sequence) return; // stale: the user has typed since
    live.chain = live.chain.then(async () => {
      if (frame.error) throw { code: `error ${frame.error.code}`, message: frame.error.message };
      if (frame.response) await onEvent(live.run, frame.response);
    }).catch((error) => { setStatus("failed", 0); showError(error); });
  };
  live.socket.onclose = () => { live.socket = null; };
  return live.socket;
}

function liveUpdate() {
  if (!$("live").checked) return;
  clearTimeout(live.timer);
  live.timer = setTimeout(() => {
    const request = buildRequest();
    if (!request.prompt.trim()) return;
    const socket = liveSocket();
    const send = () => {
      clearError();
      live.sequence += 1; // strictly increasing per session
      live.run = newRun(request.prompt.trim());
      socket.send(JSON.stringify({ sequence: String(live.sequence), request }));
    };
    if (socket.readyState === WebSocket.OPEN) send(); else socket.addEventListener("open", send, { once: true });
  }, 300);
}

async function generate(submit) {
  submit.preventDefault();
  if (controller) controller.abort();
  clearError();
  const request = buildRequest();
  const prompt = request.prompt.trim();
  showRequest();
  controller = new AbortController();
  $("generate").disabled = true;
  $("cancel").disabled = false;
  setStatus("sending…", 0.02);
  const run = newRun(prompt);
  try {
    const response = await fetch("/v1/generate", {
      method: "POST",
      headers: authHeaders({ "Content-Type": "application/json", Accept: "application/x-ndjson" }),
      body: JSON.stringify(request),
      signal: controller.signal,
    });
    if (!response.ok) {
      let body;
      try { body = await response.json(); } catch { body = { message: `HTTP ${response.status}` }; }
      throw body;
    }
    for await (const event of jsonLines(response)) await onEvent(run, event);
    if (!run.done) throw new Error("the stream ended before its done event");
  } catch (error) {
    if (error && error.name === "AbortError") {
      setStatus("cancelled", 0);
    } else {
      setStatus("failed", 0);
      showError(error);
    }
    for (const cell of run.cells) if (cell.classList.contains("pending")) cell.remove();
  } finally {
    controller = null;
    $("generate").disabled = false;
    $("cancel").disabled = true;
  }
}

// ------------------------------------------------------------------------------------
// Start-up

async function loadModels() {
  try {
    const response = await fetch("/v1/models", { headers: authHeaders() });
    const body = await response.json();
    if (!response.ok) throw body;
    const select = $("model");
    select.replaceChildren();
    for (const m of body.models || []) {
      const option = document.createElement("option");
      option.value = JSON.stringify({ name: m.name, version: m.version });
      option.textContent = `${m.name} ${m.version}${m.isDefault ? " (default)" : ""}`;
      option.title = `${m.resolution} px · ${m.precision} · ${m.executionProvider}`;
      option.selected = Boolean(m.isDefault);
      select.append(option);
    }
    const first = (body.models || [])[0];
    $("server-info").textContent = first
      ? `${body.models.length} model${body.models.length > 1 ? "s" : ""} · ${first.executionProvider || ""}`
      : "no models loaded";
    clearError();
  } catch (error) {
    $("server-info").textContent = "cannot list models";
    showError(error);
  }
}

function init() {
  for (const text of EXAMPLES) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "chip";
    button.textContent = text;
    button.addEventListener("click", () => { $("prompt").value = text; showRequest(); readPrompt(); $("prompt").focus(); });
    $("examples").append(button);
  }
  $("psi").addEventListener("input", () => { $("psi-value").textContent = Number($("psi").value).toFixed(2); });
  $("form").addEventListener("submit", generate);
  $("form").addEventListener("input", showRequest);
  $("form").addEventListener("input", liveUpdate);
  $("prompt").addEventListener("input", readPrompt);
  $("live").addEventListener("change", liveUpdate);
  $("form").addEventListener("change", showRequest);
  $("cancel").addEventListener("click", () => controller && controller.abort());
  $("clear").addEventListener("click", () => { clearGrid(); clearError(); setStatus("", 0); });
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) $("form").requestSubmit();
  });
  $("token").addEventListener("change", loadModels);
  showRequest();
  loadModels();
}

init();
