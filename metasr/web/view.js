// metasr view: continuous zoom with the model in the page (onnxruntime-web, vendored; no network).
//
// Contract with the server (metasr/view.py): /config.json names the graphs and limits.
//   feature.onnx                 lr float32 [1, 3, h, w] (0..255)      -> features float32 [1, C, h, w]  (once)
//   upscale.portable.onnx        features, scale float64 []            -> float32 [1, 3, H', W'] (0..255, unclamped)
//   upscale.portable.size.onnx   features, size int64 [2] = (H', W')   -> float32 [1, 3, H', W']
// H' = floor(scale*h), W' = floor(scale*w) in double arithmetic (Python's int(scale*h)). The page clamps to
// [0, 255] and rounds half to even, exactly like runtime/pipeline.py, so its pixels equal `metasr upscale`'s.
// State for people and tests: window.metasrView.state (backend, timings, how often each stage ran, errors).

const $ = (id) => document.getElementById(id);
const state = {
  ready: false, busy: false, backend: "", threads: 0, error: "", message: "",
  image: null, // {name, width, height}
  featureRuns: 0, upscaleRuns: 0,
  timings: { feature: [], upscale: [] }, // ms, one entry per run
  output: null, // {width, height, target}
};
window.metasrView = { state };

let ort, config, sessions = {}, features = null, lrBitmap = null;
const sr = document.createElement("canvas"); // the model's output at full resolution
let pending = null; // the latest target asked for while a run was busy (slider moves coalesce)

function say(text) { state.message = text; $("message").textContent = text; }

function fail(text) { state.error = text; say(text); }

function rint(x) { // round half to even (numpy's np.round), on values already clamped to [0, 255]
  const f = Math.floor(x), d = x - f;
  return d > 0.5 ? f + 1 : d < 0.5 ? f : (f % 2 === 0 ? f : f + 1);
}

async function pickBackend() {
  const asked = new URLSearchParams(location.search).get("backend");
  if (asked === "wasm") return "wasm";
  if (navigator.gpu) {
    try { if (await navigator.gpu.requestAdapter()) return "webgpu"; } catch { /* no adapter: wasm */ }
  }
  if (asked === "webgpu") say("WebGPU is not available in this browser: running on wasm");
  return "wasm";
}

async function init() {
  config = await (await fetch("/config.json")).json();
  ort = await import(config.runtime);
  ort.env.wasm.wasmPaths = config.wasm_paths;
  state.threads = self.crossOriginIsolated ? Math.min(navigator.hardwareConcurrency || 1, 16) : 1;
  ort.env.wasm.numThreads = state.threads;
  state.backend = await pickBackend();
  // wasm runs in a worker (ORT's proxy), so the tab stays responsive during a run of seconds (docs/view.md)
  ort.env.wasm.proxy = state.backend === "wasm";
  const options = { executionProviders: [state.backend], graphOptimizationLevel: "all" };
  for (const [role, url] of Object.entries(config.graphs)) {
    const bytes = new Uint8Array(await (await fetch(url)).arrayBuffer());
    sessions[role] = await ort.InferenceSession.create(bytes, options);
  }
  $("scale").min = String(Math.max(1.1, config.scale_min_exclusive + 0.05));
  $("scale").max = String(Math.min(4.0, config.scale_max));
  state.ready = true;
  showTimings("ready: drop or pick an image");
}

function showTimings(extra = "") {
  const f = state.timings.feature.at(-1), u = state.timings.upscale.at(-1), o = state.output;
  const parts = [`backend ${state.backend}${state.backend === "wasm" ? ` (${state.threads} threads)` : ""}`];
  if (f !== undefined) parts.push(`features ${f.toFixed(0)} ms (runs: ${state.featureRuns})`);
  if (u !== undefined && o) parts.push(`upscale ${o.label} -> ${o.width}x${o.height} in ${u.toFixed(0)} ms ` +
    `(runs: ${state.upscaleRuns})`);
  if (extra) parts.push(extra);
  $("timings").textContent = parts.join(" · ");
}

async function decode(file) {
  try {
    return await createImageBitmap(file, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  } catch {
    throw new Error(`${file.name || "this file"} is not an image this browser can decode (PNG, JPEG, WebP, ...)`);
  }
}

async function loadFile(file) {
  if (!state.ready) { say(state.error || "the runtime is still starting: try again in a moment"); return; }
  if (state.busy) { say("busy: wait for the current run to finish"); return; }
  state.error = ""; say("");
  let bitmap;
  try { bitmap = await decode(file); } catch (e) { fail(e.message); return; }
  const { width: w, height: h } = bitmap, max = config.max_input_pixels;
  if (w * h > max) {
    bitmap.close();
    fail(`${file.name} is ${w}x${h} (${(w * h).toLocaleString()} pixels); this page takes at most ` +
      `${max.toLocaleString()} pixels (e.g. ${Math.floor(Math.sqrt(max))}x${Math.floor(Math.sqrt(max))}) to ` +
      "stay responsive in wasm. Crop it, or use `metasr upscale`, which tiles any size.");
    return;
  }
  if (lrBitmap) lrBitmap.close();
  lrBitmap = bitmap;
  state.image = { name: file.name, width: w, height: h };
  state.busy = true;
  showTimings(`computing the features of ${w}x${h}…`);
  try {
    await computeFeatures(bitmap);
  } catch (e) {
    state.busy = false; fail(`the feature stage failed: ${e.message || e}`); return;
  }
  state.busy = false;
  for (const id of ["scale", "width", "height", "size-go"]) $(id).disabled = false;
  await upscale({ scale: Number($("scale").value) });
}

async function computeFeatures(bitmap) {
  const { width: w, height: h } = bitmap;
  const c = new OffscreenCanvas(w, h).getContext("2d", { willReadFrequently: true });
  c.drawImage(bitmap, 0, 0);
  const rgba = c.getImageData(0, 0, w, h).data, n = w * h, lr = new Float32Array(3 * n);
  for (let i = 0; i < n; i++) { // RGBA (h, w, 4) -> RGB planes (3, h, w); alpha is dropped
    lr[i] = rgba[4 * i]; lr[n + i] = rgba[4 * i + 1]; lr[2 * n + i] = rgba[4 * i + 2];
  }
  const feed = { [sessions.feature.inputNames[0]]: new ort.Tensor("float32", lr, [1, 3, h, w]) };
  const t0 = performance.now();
  const out = await sessions.feature.run(feed);
  state.timings.feature.push(performance.now() - t0);
  const t = out[sessions.feature.outputNames[0]];
  // kept as plain data: a run in the worker (ORT's proxy) takes its input buffers, so each run gets a copy
  features = { data: t.data.slice(), dims: t.dims };
  t.dispose?.();
  state.featureRuns += 1;
}

function nextUp(x) { // the next double above a positive x (Python's math.nextafter(x, inf))
  const f = Float64Array.of(x);
  new BigInt64Array(f.buffer)[0] += 1n;
  return f[0];
}

function coveringScale(h, w, H, W) { // the smallest scale whose output covers H x W (batch.py scale_for_size)
  let r = Math.max(H / h, W / w);
  while (Math.floor(r * h) < H || Math.floor(r * w) < W) r = nextUp(r);
  return r;
}

function checkTarget(target) { // the scale or exact size against the exported range; a message, or ""
  const { width: w, height: h } = state.image, lo = config.scale_min_exclusive, hi = config.scale_max;
  if ("scale" in target) {
    const r = target.scale;
    return Number.isFinite(r) && r > lo && r <= hi ? "" : `scale must be in (${lo}, ${hi}], got ${r}`;
  }
  const [H, W] = target.size;
  if (!Number.isInteger(H) || !Number.isInteger(W) || H < 1 || W < 1) return "width and height must be whole numbers >= 1";
  const r = coveringScale(h, w, H, W);
  if (!(r > lo && r <= hi)) {
    return `${W}x${H} needs a scale of ${r.toFixed(3)} from ${w}x${h}; this model covers (${lo}, ${hi}] ` +
      `(${Math.floor(lo * w) + 1}..${Math.floor(hi * w)} wide at this aspect)`;
  }
  return "";
}

async function upscale(target) {
  if (!features) return;
  if (state.busy) { pending = target; return; }
  const problem = checkTarget(target);
  if (problem) { fail(problem); return; }
  state.error = ""; say("");
  state.busy = true;
  try {
    const role = "scale" in target ? "scale" : "size";
    const s = sessions[role];
    const feed = { features: new ort.Tensor("float32", features.data.slice(), features.dims) };
    feed[role] = role === "scale"
      ? new ort.Tensor("float64", Float64Array.of(target.scale), [])
      : new ort.Tensor("int64", BigInt64Array.of(BigInt(target.size[0]), BigInt(target.size[1])), [2]);
    const t0 = performance.now();
    const out = (await s.run(feed))[s.outputNames[0]];
    state.timings.upscale.push(performance.now() - t0);
    state.upscaleRuns += 1;
    const [, , H, W] = out.dims;
    const label = role === "scale" ? `x${target.scale.toFixed(2)}` : `size ${target.size[1]}x${target.size[0]}`;
    state.output = { width: W, height: H, label, target };
    paintOutput(out.data, H, W);
    out.dispose?.();
    showTimings();
  } catch (e) {
    fail(`the upscale stage failed: ${e.message || e}`);
  } finally {
    state.busy = false;
  }
  if (pending) { const next = pending; pending = null; await upscale(next); }
}

function paintOutput(data, H, W) { // float32 (3, H, W) -> clamped, rounded RGBA on the sr canvas
  const n = H * W, img = new ImageData(W, H), px = img.data;
  for (let c = 0; c < 3; c++) {
    const plane = c * n;
    for (let i = 0; i < n; i++) {
      const v = data[plane + i];
      px[4 * i + c] = v <= 0 ? 0 : v >= 255 ? 255 : rint(v); // NaN would be 0: a graph never gives one
    }
  }
  for (let i = 0; i < n; i++) px[4 * i + 3] = 255;
  sr.width = W; sr.height = H;
  sr.getContext("2d").putImageData(img, 0, 0);
  draw();
}

function draw() { // the split view: bicubic on the left of the divider, Meta-SR on the right
  if (!state.output) return;
  const view = $("view"), { width: W, height: H } = state.output;
  if (view.width !== W || view.height !== H) { view.width = W; view.height = H; }
  const ctx = view.getContext("2d"), x = Math.round((W * Number($("split").value)) / 100);
  const { width: w, height: h } = state.image, t = state.output.target;
  // bicubic over the same geometry: the full int(r*h) x int(r*w) output, centre-cropped for an exact size
  const r = "scale" in t ? t.scale : coveringScale(h, w, H, W);
  const fw = Math.floor(r * w), fh = Math.floor(r * h);
  ctx.imageSmoothingEnabled = true; ctx.imageSmoothingQuality = "high";
  ctx.drawImage(lrBitmap, -Math.floor((fw - W) / 2), -Math.floor((fh - H) / 2), fw, fh);
  if (x < W) ctx.drawImage(sr, x, 0, W - x, H, x, 0, W - x, H);
  ctx.fillStyle = "#fff"; ctx.fillRect(Math.max(0, x - 1), 0, 2, H);
}

// the SR pixels as base64 RGB (H, W, 3): for tests and screenshots of exactly what the model gave
window.metasrView.srPixels = () => {
  const { width: W, height: H } = sr, px = sr.getContext("2d").getImageData(0, 0, W, H).data;
  const rgb = new Uint8Array(W * H * 3);
  for (let i = 0, j = 0; i < px.length; i += 4) { rgb[j++] = px[i]; rgb[j++] = px[i + 1]; rgb[j++] = px[i + 2]; }
  let s = "";
  for (let i = 0; i < rgb.length; i += 0x8000) s += String.fromCharCode(...rgb.subarray(i, i + 0x8000));
  return btoa(s);
};

function wire() {
  const drop = $("drop");
  $("file").addEventListener("change", (e) => { if (e.target.files[0]) loadFile(e.target.files[0]); });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault(); drop.classList.remove("over");
    if (e.dataTransfer.files[0]) loadFile(e.dataTransfer.files[0]);
  });
  $("scale").addEventListener("input", () => {
    const r = Number($("scale").value);
    $("scale-value").textContent = `x${r.toFixed(2)}`;
    upscale({ scale: r });
  });
  $("size-form").addEventListener("submit", (e) => {
    e.preventDefault();
    upscale({ size: [Number($("height").value), Number($("width").value)] });
  });
  $("split").addEventListener("input", draw);
  $("view").addEventListener("pointermove", (e) => {
    if (e.buttons !== 1) return;
    const box = e.target.getBoundingClientRect();
    $("split").value = String(Math.round((100 * (e.clientX - box.left)) / box.width));
    draw();
  });
}

wire();
init().catch((e) => fail(`the runtime did not start: ${e.message || e}`));
