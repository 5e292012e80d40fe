// The drawing page: pointer strokes on a canvas → PNG (black ink on white) → POST /api/predict → the answer.
// Strokes are kept (in 0..1 canvas units) so that undo and resizing redraw them exactly.
"use strict";

const $ = (id) => document.getElementById(id);
const canvas = $("canvas"), ctx = canvas.getContext("2d");
const result = document.querySelector(".result");
const LOGICAL = 280;           // pen widths are in pixels of a 280-px canvas, whatever its real size
const THROTTLE_MS = 150;       // while drawing, predict at most this often
const OK_VERDICTS = /^(ok|digit|sure|confident|certain)$/i;

let strokes = [];              // [{w: width as a fraction of the canvas, pts: [[x,y], …]}]
let background = null;         // an uploaded image drawn under the strokes
let current = null;            // the stroke being drawn
let timer = null, inFlight = false, dirty = false, count = 0, framePending = false;
let generation = 0;             // bumped by Clear: replies to requests sent before it are dropped

// ------------------------------------------------------------ drawing
function fitCanvas() {
  const side = Math.round(canvas.getBoundingClientRect().width * (window.devicePixelRatio || 1));
  if (side > 0 && canvas.width !== side) { canvas.width = canvas.height = side; redraw(); }
}

function redraw() {
  const s = canvas.width;
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, s, s);
  if (background) {
    const k = Math.min(s / background.width, s / background.height);
    const w = background.width * k, h = background.height * k;
    ctx.drawImage(background, (s - w) / 2, (s - h) / 2, w, h);
  }
  ctx.strokeStyle = ctx.fillStyle = "#000";
  ctx.lineCap = ctx.lineJoin = "round";
  for (const st of strokes) {
    ctx.lineWidth = st.w * s;
    if (st.pts.length === 1) {   // a tap: a round dot
      ctx.beginPath();
      ctx.arc(st.pts[0][0] * s, st.pts[0][1] * s, ctx.lineWidth / 2, 0, 2 * Math.PI);
      ctx.fill();
      continue;
    }
    ctx.beginPath();
    ctx.moveTo(st.pts[0][0] * s, st.pts[0][1] * s);
    for (const [x, y] of st.pts.slice(1)) ctx.lineTo(x * s, y * s);
    ctx.stroke();
  }
  $("hint").classList.toggle("gone", isBlank() === false);
  $("undo").disabled = strokes.length === 0;
}

function isBlank() { return strokes.length === 0 && !background; }

function point(e) {
  const r = canvas.getBoundingClientRect();
  return [(e.clientX - r.left) / r.width, (e.clientY - r.top) / r.height];
}

canvas.addEventListener("pointerdown", (e) => {
  if (e.pointerType === "mouse" && e.button !== 0) return;
  e.preventDefault();
  try { canvas.setPointerCapture(e.pointerId); } catch { /* a synthetic event has no capturable pointer */ }
  current = { w: Number($("pen").value) / LOGICAL, pts: [point(e)] };
  strokes.push(current);
  redraw();
  schedule();
});
canvas.addEventListener("pointermove", (e) => {
  if (!current) return;
  const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [e];
  for (const ev of events.length ? events : [e]) current.pts.push(point(ev));
  if (!framePending) { framePending = true; requestAnimationFrame(() => { framePending = false; redraw(); }); }
  schedule();
});
for (const type of ["pointerup", "pointercancel"]) {
  canvas.addEventListener(type, () => { if (current) { current = null; schedule(0); } });
}

function undo() {
  if (!strokes.length) return;
  strokes.pop();
  redraw();
  isBlank() ? reset() : schedule(0);
}

function clearAll() {
  strokes = []; background = null; current = null;
  redraw();
  reset();
}

$("undo").addEventListener("click", undo);
$("clear").addEventListener("click", clearAll);
$("pen").addEventListener("input", () => { $("pen-value").textContent = $("pen").value; });
document.addEventListener("keydown", (e) => {
  if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "z") { e.preventDefault(); undo(); }
  else if (e.key === "Escape") clearAll();
});

// ------------------------------------------------------------ predicting
// Throttled while drawing; at most one request in flight, and the latest drawing always gets its answer.
function schedule(delay = THROTTLE_MS) {
  dirty = true;
  if (delay === 0) { clearTimeout(timer); timer = null; flush(); return; }
  if (!timer) timer = setTimeout(() => { timer = null; flush(); }, delay);
}

async function flush() {
  if (inFlight || !dirty) return;
  dirty = false;
  if (isBlank()) return;
  inFlight = true;
  result.dataset.state = "busy";
  try {
    const blob = await new Promise((ok) => canvas.toBlob(ok, "image/png"));
    await send(blob, { "Content-Type": "image/png" });
  } finally {
    inFlight = false;
    if (dirty && !timer) flush();
  }
}

// data-state on .result: "busy" while a reply for the latest drawing is still to come, then "done" or "error"
// (the tests wait on it); data-count counts the replies.
async function send(body, headers = {}) {
  result.dataset.state = "busy";
  const sentIn = generation;
  let state = "done";
  try {
    const r = await fetch("/api/predict", { method: "POST", body, headers });
    const data = await r.json().catch(() => ({ detail: `HTTP ${r.status}` }));
    if (!r.ok) throw new Error(typeof data.detail === "string" ? data.detail : `HTTP ${r.status}`);
    if (sentIn === generation) render(data);
  } catch (err) {
    showStatus(err.message || String(err), true);
    state = "error";
  }
  result.dataset.count = String(++count);
  result.dataset.state = dirty || timer ? "busy" : state;  // more strokes came in meanwhile: another reply is due
}

async function upload(file) {
  if (!file) return;
  strokes = []; current = null; background = null;
  try { background = await createImageBitmap(file); } catch { /* the server may still read it (e.g. TIFF) */ }
  redraw();
  const form = new FormData();
  form.append("file", file, file.name);
  showStatus(`reading ${file.name}…`);
  await send(form);
}

$("file").addEventListener("change", (e) => { upload(e.target.files[0]); e.target.value = ""; });
// A file dropped anywhere on the page is read (the browser would otherwise navigate away to it).
const drop = $("drop");
document.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
document.addEventListener("dragleave", (e) => { if (!e.relatedTarget) drop.classList.remove("over"); });
document.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  upload(e.dataTransfer && e.dataTransfer.files[0]);
});

// ------------------------------------------------------------ showing the answer
const pct = (p) => `${(100 * p).toFixed(p >= 0.9995 || p < 0.0005 ? 0 : 1)}%`;

function showStatus(text, error = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", error);
}

function verdictText(v) {
  if (v == null || v === "") return "";
  if (Array.isArray(v)) return v.map(verdictText).filter(Boolean).join(", ");
  if (typeof v === "object") return verdictText(v.label ?? v.verdict ?? v.status ?? "");
  return String(v);
}

// Fields beyond the core ones (verdict, per-digit status and reasons) are shown when the server sends them.
function render(d) {
  const list = (v) => (Array.isArray(v) ? v : []);
  const digits = list(d.digits), conf = list(d.confidence);
  const verdict = verdictText(d.verdict);
  const reasons = [...new Set(list(d.reasons).filter((r) => typeof r === "string" && r))];
  const sure = !verdict || verdict.split(", ").every((v) => OK_VERDICTS.test(v));
  $("number").textContent = d.number || "–";
  $("number").classList.toggle("unsure", !sure);
  $("confidence").textContent = !digits.length ? "No digit found."
    : digits.length === 1 ? `${pct(conf[0] ?? 0)} sure`
    : `${digits.length} digits, ${conf.map(pct).join(" · ")} sure`;
  $("verdict").hidden = sure || !digits.length;  // "ok" needs no badge; "no digit found" is said above
  $("verdict").textContent = verdict + (reasons.length ? `: ${reasons.join("; ")}` : "");
  renderCharts(list(d.probabilities), digits, list(d.status), list(d.reasons));
  renderInputs(Array.isArray(d.inputs_png) ? d.inputs_png : []);
  const t = d.timing_ms && d.timing_ms.total;
  showStatus(typeof t === "number" ? `answered in ${t.toFixed(1)} ms on the server` : "");
}

function renderCharts(rows, digits, status = [], reasons = []) {
  const box = $("charts");
  box.replaceChildren();
  rows.forEach((probs, i) => {
    const chart = document.createElement("div");
    chart.className = "chart";
    const h = document.createElement("h3");
    h.textContent = rows.length > 1 ? `Digit ${i + 1} of ${rows.length}: probabilities` : "Probabilities";
    if (status[i] && !OK_VERDICTS.test(status[i])) h.textContent += ` (${status[i]}${reasons[i] ? `: ${reasons[i]}` : ""})`;
    const list = document.createElement("ol");
    list.className = "bars";
    list.setAttribute("aria-label", h.textContent);
    const top = digits[i] ?? probs.indexOf(Math.max(...probs));
    probs.forEach((p, k) => {
      const li = document.createElement("li");
      li.className = "bar" + (k === top ? " top" : "");
      li.innerHTML = `<span class="digit">${k}</span><span class="track"><span class="fill"></span></span>` +
                     `<span class="pct">${pct(p)}</span>`;
      li.querySelector(".fill").style.width = `${Math.max(0, Math.min(1, p)) * 100}%`;
      li.setAttribute("aria-label", `${k}: ${pct(p)}`);
      list.append(li);
    });
    chart.append(h, list);
    box.append(chart);
  });
}

function renderInputs(urls) {
  const box = $("inputs");
  box.replaceChildren();
  urls.forEach((url, i) => {
    const img = new Image(28, 28);
    img.src = url;
    img.alt = `the 28×28 input the model saw for digit ${i + 1}`;
    box.append(img);
  });
  if (!urls.length) box.innerHTML = '<span class="muted">nothing yet</span>';
}

function reset() {
  dirty = false;
  generation++;
  clearTimeout(timer);
  timer = null;
  result.dataset.state = "idle";
  $("number").textContent = "–";
  $("number").classList.remove("unsure");
  $("confidence").textContent = "Draw a digit to start.";
  $("verdict").hidden = true;
  showStatus("");
  renderCharts([], []);
  renderInputs([]);
}

// ------------------------------------------------------------ start
async function describeModel() {
  try {
    const m = await (await fetch("/api/model")).json();
    const bits = [m.model_name && `model ${m.model_name}`,
                  m.parameters != null && `${Number(m.parameters).toLocaleString("en")} parameters`,
                  m.test_accuracy != null && `test accuracy ${(100 * m.test_accuracy).toFixed(2)}%`,
                  m.step != null && `step ${m.step}`, m.engine && `engine ${m.engine}`];
    $("model-info").textContent = bits.filter(Boolean).join(" · ");
  } catch {
    $("model-info").textContent = "model description unavailable";
  }
}

new ResizeObserver(fitCanvas).observe(canvas);
fitCanvas();
redraw();
describeModel();
