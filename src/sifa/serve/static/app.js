// The page of `sifa serve`: choose or drop a video, then show what the API answers for it
// (/v1/predict as bars and a timeline, /v1/annotate as a second video, /v1/offsets as a
// picture). Plain JavaScript, no build step, nothing loaded from anywhere but this server.
"use strict";

const $ = (id) => document.getElementById(id);

const state = {
  model: null, // the answer of /v1/model
  file: null, // the video being looked at (a File: it can be sent again)
  run: 0, // counts uploads: answers to an older one are dropped when they arrive late
  urls: {}, // object URLs by element id, revoked when replaced
};

class ApiError extends Error {}

// -- talking to the API ------------------------------------------------------------------

/** The server's `{"error": message}`, or what can be said without one. */
async function errorMessage(response) {
  const text = await response.text();
  try {
    const message = JSON.parse(text).error;
    if (message) return message;
  } catch {
    // not JSON (a proxy's page, say): described below
  }
  const detail = text ? `: ${text.slice(0, 200)}` : "";
  return `the server answered ${response.status} ${response.statusText}${detail}`;
}

/** A successful response of `fetch(path, options)`, else an ApiError with a readable message. */
async function request(path, options) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (error) {
    throw new ApiError(`the server cannot be reached (${error.message})`);
  }
  if (!response.ok) throw new ApiError(await errorMessage(response));
  return response;
}

/** POST `file` as the multipart part "video" to `path`; empty query values are left out. */
function postVideo(path, file, query) {
  const body = new FormData();
  body.append("video", file, file.name);
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value !== "") params.set(key, value);
  }
  return request(`${path}?${params}`, { method: "POST", body });
}

// -- small helpers -----------------------------------------------------------------------

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

const percent = (score) => `${(score * 100).toFixed(1)}%`;
const seconds = (s) => `${Number(s.toFixed(2))} s`;

/** One colour per class, the same in the bars and the timeline (spread by the golden angle). */
function classColour(label) {
  const index = Math.max(0, state.model ? state.model.classes.indexOf(label) : 0);
  return `hsl(${(index * 137.5) % 360} 55% 62%)`;
}

/** Show `source` (a File or Blob, or null for nothing) in the media element `id`. */
function showMedia(id, source) {
  const node = $(id);
  if (state.urls[id]) URL.revokeObjectURL(state.urls[id]);
  state.urls[id] = source ? URL.createObjectURL(source) : null;
  if (source) {
    node.src = state.urls[id];
  } else {
    node.removeAttribute("src");
    if (node.load) node.load(); // a video lets go of the old one
  }
  node.hidden = !source && node.tagName === "IMG";
}

function setStatus(text, phase) {
  $("status").textContent = text;
  $("status").dataset.state = phase; // idle, scoring, annotating, done or failed: for tests
}

function showError(title, message) {
  $("error-text").replaceChildren(element("strong", null, title), element("span", null, message));
  $("error").hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error-text").replaceChildren();
}

/** An error of a request about `file`: its message names the file (the server's usually do). */
function failed(title, file, error) {
  const message = error instanceof ApiError ? error.message : `${error.name}: ${error.message}`;
  showError(title, message.includes(file.name) ? message : `${file.name}: ${message}`);
  if (!(error instanceof ApiError)) console.error(error); // a bug of this page
}

// -- the model -----------------------------------------------------------------------------

const count = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

function describeClip(model) {
  const frames =
    model.sampling === "dense"
      ? `${model.clip_len} frames, ${model.frame_interval} apart`
      : `${model.clip_len} frames, one per segment`;
  const views = `${count(model.test_clips, "clip")} × ${count(model.test_crops, "crop")}`;
  return (
    `${model.num_classes} classes · clips of ${frames} · ` +
    `${views} of ${model.test_crop_size} px · on ${model.device}`
  );
}

function showModel(model) {
  $("model-name").textContent = model.name;
  $("model-name").title = `${model.weights} (sha256 ${model.weights_sha256})`;
  $("model-clip").textContent = describeClip(model);
  $("classes").replaceChildren(...model.classes.map((name) => element("li", null, name)));
  $("classes-summary").textContent = `the ${model.num_classes} classes`;
  $("model-classes").hidden = false;
  $("version").textContent = `sifa ${model.sifa_version}`;
  const stages = model.sifa_stages;
  $("offsets-stage").replaceChildren(...stages.map((name) => new Option(name, name)));
  // A model without SIFA blocks has no offsets to draw: say so instead of offering a button.
  $("offsets-form").hidden = stages.length === 0;
  $("offsets-note").hidden = stages.length > 0;
  $("offsets-note").textContent = `${model.name} has no SIFA stages, so it has no offsets to draw.`;
  // The server places a clip at a chosen frame only for dense sampling.
  $("offsets-frame").disabled = model.sampling !== "dense";
}

async function loadModel() {
  try {
    state.model = await (await request("/v1/model")).json();
  } catch (error) {
    showError("The model's description cannot be read", error.message);
    return;
  }
  showModel(state.model);
  updateButtons();
}

// -- the prediction ------------------------------------------------------------------------

function showBars(result) {
  const bars = result.top.map(({ label, score }) => {
    const bar = element("li", "bar");
    bar.dataset.score = score;
    const track = element("span", "track");
    const fill = element("span", "fill");
    fill.style.width = `${score * 100}%`;
    fill.style.background = classColour(label);
    track.append(fill);
    bar.append(element("span", "label", label), element("span", "score", percent(score)), track);
    return bar;
  });
  $("bars").replaceChildren(...bars);
  const windows = result.windows ? result.windows.length : 0;
  $("bars-scope").textContent = windows
    ? `(the average of ${windows} windows)`
    : `(the whole video, ${result.frames} frames)`;
}

/** Seek both players to `time` seconds (the annotated one follows the original's frames). */
function seek(time) {
  for (const id of ["original", "annotated"]) {
    if ($(id).getAttribute("src")) $(id).currentTime = time;
  }
}

/** One segment per window, as wide as its share of the video, named by its top-1 class. */
function showTimeline(windows) {
  const box = $("timeline-box");
  box.hidden = !windows || windows.length === 0;
  if (box.hidden) {
    $("timeline").replaceChildren();
    return;
  }
  const start = windows[0].start_s;
  const total = windows[windows.length - 1].end_s - start || 1;
  const segments = windows.map((window) => {
    const best = window.top[0];
    const span = `${seconds(window.start_s)} – ${seconds(window.end_s)}`;
    const segment = element("button", "segment", best.label);
    segment.type = "button"; // a button: reachable and usable from the keyboard
    segment.setAttribute("role", "listitem");
    segment.title = `${best.label} ${percent(best.score)} (${span})`;
    segment.setAttribute("aria-label", segment.title);
    segment.dataset.start = window.start_s;
    segment.dataset.end = window.end_s;
    segment.style.width = `${((window.end_s - window.start_s) / total) * 100}%`;
    segment.style.background = classColour(best.label);
    segment.addEventListener("click", () => seek(window.start_s));
    return segment;
  });
  $("timeline").replaceChildren(...segments);
  $("timeline-axis").replaceChildren(
    element("span", null, seconds(start)),
    element("span", null, seconds(start + total)),
  );
}

/** Mark the segment the original video is playing. */
function markPlayingSegment() {
  const time = $("original").currentTime;
  for (const segment of $("timeline").children) {
    const playing = time >= Number(segment.dataset.start) && time < Number(segment.dataset.end);
    segment.toggleAttribute("aria-current", playing);
  }
}

function clearResults() {
  $("bars").replaceChildren();
  $("bars-scope").textContent = "";
  showTimeline(null);
  showMedia("annotated", null);
  showMedia("offsets-image", null);
}

function queryOfForm() {
  return { topk: $("topk").value.trim(), window_seconds: $("window-seconds").value.trim() };
}

/** Score `file`, then have the server draw the annotated video. */
async function analyse(file) {
  const run = ++state.run;
  const current = () => run === state.run;
  state.file = file;
  $("file-name").textContent = file.name;
  $("result").hidden = $("offsets").hidden = false; // hidden until there is a video
  clearError();
  clearResults();
  showMedia("original", file);
  updateButtons();
  const query = queryOfForm();
  let step = "Scoring failed";
  try {
    setStatus(`scoring ${file.name}...`, "scoring");
    const result = await (await postVideo("/v1/predict", file, query)).json();
    if (!current()) return;
    showBars(result);
    showTimeline(result.windows);
    step = "Drawing the annotated video failed";
    setStatus(`drawing the annotated video of ${file.name}...`, "annotating");
    const video = await (await postVideo("/v1/annotate", file, query)).blob();
    if (!current()) return;
    showMedia("annotated", video);
    const fps = result.fps ? ` at ${Number(result.fps.toFixed(2))} fps` : "";
    setStatus(`${file.name}: ${result.frames} frames${fps}, scored and annotated.`, "done");
  } catch (error) {
    if (!current()) return;
    failed(step, file, error);
    setStatus(`${step}.`, "failed");
  }
}

// -- the offsets -----------------------------------------------------------------------------

async function drawOffsets(event) {
  event.preventDefault();
  const file = state.file;
  const run = state.run;
  const note = $("offsets-status");
  clearError();
  note.textContent = `drawing the offsets of ${file.name}...`;
  note.dataset.state = "drawing";
  try {
    const query = { frame: $("offsets-frame").value.trim(), stage: $("offsets-stage").value };
    const picture = await (await postVideo("/v1/offsets", file, query)).blob();
    if (run !== state.run) return;
    showMedia("offsets-image", picture);
    $("offsets-image").alt = `offsets of stage ${query.stage} in ${file.name}`;
    note.textContent = "";
    note.dataset.state = "done";
  } catch (error) {
    if (run !== state.run) return;
    failed("Drawing the offsets failed", file, error);
    note.textContent = "The offsets could not be drawn (the message is at the top).";
    note.dataset.state = "failed";
  }
}

// -- wiring ------------------------------------------------------------------------------------

function updateButtons() {
  $("score").disabled = !state.file;
  $("offsets-button").disabled = !state.file || !state.model || !state.model.sifa_stages.length;
}

function wireDropZone() {
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => {
    event.preventDefault(); // allows the drop
    drop.classList.add("dragging");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("dragging"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("dragging");
    const file = event.dataTransfer.files[0];
    if (file) analyse(file);
  });
  // A file dropped beside the zone would make the browser leave the page for it.
  for (const name of ["dragover", "drop"]) {
    window.addEventListener(name, (event) => event.preventDefault());
  }
}

function wire() {
  $("file").addEventListener("change", () => {
    const file = $("file").files[0];
    if (file) analyse(file);
  });
  wireDropZone();
  $("upload-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if (state.file) analyse(state.file);
  });
  $("offsets-form").addEventListener("submit", drawOffsets);
  $("error-close").addEventListener("click", clearError);
  $("original").addEventListener("timeupdate", markPlayingSegment);
  $("annotated").addEventListener("error", () => {
    if (!$("annotated").getAttribute("src")) return; // emptied on purpose
    const problem = $("annotated").error;
    showError(
      "This browser cannot play the annotated video (H.264 in mp4)",
      problem && problem.message ? problem.message : "the video cannot be decoded",
    );
  });
  setStatus("Choose a video to score.", "idle");
  loadModel();
}

wire();
