// Cats vs Dogs web page: pick or drop photos, send them to the API, show one card per file.
// Plain JS, no dependencies, no build step; every request goes to the page's own origin.
"use strict";

(() => {
  const DEFAULT_MAX_BATCH = 16; // the API's default max_batch_files; a 413 "too_many_files" lowers it
  const IMAGE_EXTENSIONS = new Set(["jpg", "jpeg", "jpe", "jfif", "png", "gif", "bmp", "webp"]);
  const ACCEPTED_HINT = "Choose a JPEG, PNG, WebP, GIF or BMP photo.";

  const input = document.getElementById("file-input");
  const dropzone = document.getElementById("dropzone");
  const results = document.getElementById("results");
  const statusEl = document.getElementById("status");
  const clearButton = document.getElementById("clear");
  const versionEl = document.getElementById("version");
  const serviceEl = document.getElementById("service");

  let maxBatch = DEFAULT_MAX_BATCH;
  let inFlight = 0;

  // --- small helpers -------------------------------------------------------------------
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text; // textContent only: file names are user input
    return node;
  }

  const percent = (p) => `${(p * 100).toFixed(1)}%`;
  const capitalize = (s) => s.charAt(0).toUpperCase() + s.slice(1);

  function extensionOf(name) {
    const dot = name.lastIndexOf(".");
    return dot < 0 ? "" : name.slice(dot + 1).toLowerCase();
  }

  function looksLikeImage(file) {
    return (file.type || "").startsWith("image/") || IMAGE_EXTENSIONS.has(extensionOf(file.name));
  }

  // Early, obvious rejections only; anything that passes is judged by the server.
  function clientError(file) {
    if (file.size === 0) return `the file is empty. ${ACCEPTED_HINT}`;
    if (!looksLikeImage(file)) return `the file is not an image (${file.type || "unknown type"}). ${ACCEPTED_HINT}`;
    return null;
  }

  function chunks(items, size) {
    const out = [];
    for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
    return out;
  }

  function setStatus(text) {
    statusEl.textContent = text;
  }

  // The API's error shape is {"detail": "<sentence>", "code": "<code>"}; 422 keeps FastAPI's list in detail.
  function describeError(response, body) {
    const detail = body && body.detail;
    const code = (body && typeof body.code === "string" && body.code) || String(response.status);
    if (typeof detail === "string") return { code, message: detail };
    if (Array.isArray(detail) && detail.length && detail[0].msg) {
      return { code, message: detail[0].msg };
    }
    return { code: String(response.status), message: `the server answered ${response.status} ${response.statusText}`.trim() };
  }

  async function postForm(url, form) {
    let response;
    try {
      response = await fetch(url, { method: "POST", body: form, headers: { Accept: "application/json" } });
    } catch (err) {
      return { ok: false, error: { code: "network", message: "could not reach the API; check the connection and retry." } };
    }
    let body = null;
    try {
      body = await response.json();
    } catch (err) {
      body = null;
    }
    if (response.ok && body) return { ok: true, body };
    return { ok: false, error: describeError(response, body) };
  }

  // --- cards ---------------------------------------------------------------------------
  function createCard(file) {
    const card = el("li", "card");
    card.dataset.state = "pending";
    card.dataset.filename = file.name;
    card.setAttribute("aria-busy", "true");

    const thumb = el("div", "thumb");
    const placeholder = () => el("span", "thumb-placeholder", extensionOf(file.name).toUpperCase() || "?");
    if (looksLikeImage(file) && file.size > 0) {
      const img = el("img");
      const url = URL.createObjectURL(file);
      img.alt = `Photo ${file.name}`;
      img.decoding = "async";
      img.addEventListener("load", () => URL.revokeObjectURL(url), { once: true });
      img.addEventListener("error", () => { URL.revokeObjectURL(url); img.replaceWith(placeholder()); }, { once: true });
      img.src = url;
      thumb.append(img);
    } else {
      thumb.append(placeholder());
    }

    const body = el("div", "card-body");
    const name = el("p", "filename", file.name);
    name.title = file.name;
    const outcome = el("div", "outcome");
    outcome.append(el("p", "pending", "Classifying…"));
    body.append(name, outcome);
    card.append(thumb, body);
    return card;
  }

  // The card's verdict: the API flags photos that are not pets and answers it is unsure of (issue 8 fields).
  function verdictOf(result) {
    if (result.is_cat_or_dog === false) return "not-pet";
    if (result.uncertain === true) return "unsure";
    return "sure";
  }

  function withArticle(word) {
    return `${/^[aeiou]/i.test(word) ? "an" : "a"} ${word}`;
  }

  function headline(result, verdict) {
    const label = el("p", `label label-${verdict === "sure" ? result.prediction : verdict}`);
    label.append(el("span", "visually-hidden", "Prediction: "));
    if (verdict === "not-pet") {
      // looks_like: the plain word for what the ImageNet head sees instead ("horse"), when the API sends one.
      const seen = typeof result.looks_like === "string" && result.looks_like;
      label.append(document.createTextNode(seen ? `This looks like ${withArticle(seen)}, not a cat or a dog` : "This doesn't look like a cat or a dog"));
    } else if (verdict === "unsure") {
      label.append(document.createTextNode("Not sure"));
      label.append(el("span", "label-guess", ` · maybe a ${result.prediction}`));
    } else {
      label.append(document.createTextNode(capitalize(result.prediction)));
    }
    return label;
  }

  function probabilityBars(probabilities) {
    const bars = el("div", "bars");
    for (const [name, p] of Object.entries(probabilities)) {
      const row = el("div", "bar");
      row.dataset.class = name;
      row.dataset.probability = String(p);
      const track = el("span", "bar-track");
      track.setAttribute("aria-hidden", "true"); // the percentage next to it carries the value
      const fill = el("span", `bar-fill fill-${name}`);
      fill.style.width = `${Math.min(Math.max(p, 0), 1) * 100}%`;
      track.append(fill);
      row.append(el("span", "bar-name", capitalize(name)), track, el("span", "bar-value", percent(p)));
      bars.append(row);
    }
    return bars;
  }

  // timing: {ms, images}: one model run of `ms` for `images` photos (a batch shares one run).
  function timeText(timing) {
    if (!timing || typeof timing.ms !== "number") return "model time n/a";
    if (timing.images > 1) return `model ≈ ${(timing.ms / timing.images).toFixed(1)} ms per photo (batch of ${timing.images})`;
    return `model ${timing.ms.toFixed(1)} ms`;
  }

  function metaLine(result, verdict, modelVersion, timing) {
    // A confidence for "not a cat or a dog" would be a confidence in the wrong question.
    const text = [verdict !== "not-pet" && `Confidence ${percent(result.confidence)}`, timeText(timing)];
    const meta = el("p", "meta", text.filter(Boolean).join(" · "));
    const version = result.model_version || modelVersion;
    const shared = timing && timing.images > 1 && `one model run of ${timing.ms.toFixed(1)} ms for ${timing.images} photos`;
    meta.title = [version && `model ${version}`, shared].filter(Boolean).join("; ");
    return meta;
  }

  function showResult(card, result, modelVersion, timing) {
    const verdict = verdictOf(result);
    const parts = [headline(result, verdict)];
    // the headline already says what a not-pet looks like; the reason would repeat it
    const repeats = verdict === "not-pet" && typeof result.looks_like === "string" && result.looks_like;
    if (verdict !== "sure" && result.reason && !repeats) parts.push(el("p", "reason", result.reason));
    if (verdict !== "not-pet") parts.push(probabilityBars(result.probabilities));
    const meta = metaLine(result, verdict, modelVersion, timing);
    parts.push(meta);

    card.querySelector(".outcome").replaceChildren(...parts);
    card.dataset.state = "done";
    card.dataset.verdict = verdict;
    card.dataset.prediction = result.prediction;
    card.removeAttribute("aria-busy");
  }

  function showError(card, error) {
    // The file name is already on the card, right above the message.
    const message = el("p", "error-message", error.message);
    card.querySelector(".outcome").replaceChildren(message);
    card.classList.add("card-error");
    card.dataset.state = "error";
    card.dataset.errorCode = error.code;
    card.removeAttribute("aria-busy");
  }

  // --- requests ------------------------------------------------------------------------
  async function predictOne({ file, card }) {
    const form = new FormData();
    form.append("file", file, file.name);
    const res = await postForm("/predict", form);
    if (res.ok) showResult(card, res.body, undefined, { ms: res.body.inference_time_ms, images: 1 });
    else showError(card, res.error);
  }

  // The server's per-request limit, from a 413 "too_many_files" answer ("... at most N per request").
  function limitFrom(error, sent) {
    const match = /at most (\d+)/.exec(error.message);
    const limit = match ? Number(match[1]) : Math.floor(sent / 2);
    return limit >= 1 && limit < sent ? limit : null;
  }

  // Per-image time in a batch: the API reports the model run each result came from, shared by the photos
  // of that run; a per-item field, when the API sends one, wins.
  function batchTiming(answers, answer) {
    if (typeof answer.per_image_ms === "number") return { ms: answer.per_image_ms, images: 1 };
    const ms = answer.inference_time_ms;
    const images = answers.filter((a) => a && !a.error && a.inference_time_ms === ms).length;
    return { ms, images: Math.max(images, 1) };
  }

  async function predictBatch(items) {
    const form = new FormData();
    for (const { file } of items) form.append("files", file, file.name);
    const res = await postForm("/predict/batch", form);
    if (!res.ok) {
      const limit = res.error.code === "too_many_files" ? limitFrom(res.error, items.length) : null;
      if (limit) {
        maxBatch = limit; // remembered for the next selections too
        for (const part of chunks(items, limit)) await predictBatch(part);
        return;
      }
      for (const { card } of items) showError(card, res.error);
      return;
    }
    // One entry per file, in upload order (the API's contract).
    const answers = Array.isArray(res.body.results) ? res.body.results : [];
    items.forEach(({ card }, i) => {
      const answer = answers[i];
      if (!answer) showError(card, { code: "missing", message: "the server returned no result for this file." });
      else if (answer.error) showError(card, answer.error);
      else showResult(card, answer, res.body.model_version, batchTiming(answers, answer));
    });
  }

  async function handleFiles(fileList) {
    const files = Array.from(fileList || []);
    if (!files.length) return;

    const items = files.map((file) => ({ file, card: createCard(file) }));
    const fragment = document.createDocumentFragment();
    for (const { card } of items) fragment.append(card);
    results.prepend(fragment); // newest selection first, in the order picked
    clearButton.hidden = false;

    const accepted = [];
    for (const item of items) {
      const problem = clientError(item.file);
      if (problem) showError(item.card, { code: "client_rejected", message: problem });
      else accepted.push(item);
    }

    inFlight += accepted.length;
    if (accepted.length) setStatus(`Classifying ${accepted.length} photo${accepted.length > 1 ? "s" : ""}…`);
    if (accepted.length === 1) {
      await predictOne(accepted[0]);
    } else {
      // More files than the server takes per request: send several requests, one after another.
      for (const part of chunks(accepted, maxBatch)) await predictBatch(part);
    }
    inFlight -= accepted.length;

    const done = items.filter(({ card }) => card.dataset.state === "done").length;
    const failed = items.length - done;
    const summary = [`Classified ${done} photo${done === 1 ? "" : "s"}`];
    if (failed) summary.push(`${failed} file${failed === 1 ? " was" : "s were"} rejected`);
    if (!inFlight) setStatus(`${summary.join("; ")}.`);
  }

  // --- API / model version in the header -----------------------------------------------
  async function getJson(url) {
    try {
      const response = await fetch(url, { headers: { Accept: "application/json" } });
      return response.ok ? await response.json() : null;
    } catch (err) {
      return null;
    }
  }

  // Plain words for everyone in the header; the versions and backend one click away (a <details>).
  async function loadInfo() {
    const [info, model] = await Promise.all([getJson("/"), getJson("/model")]);
    if (!info && !model) {
      serviceEl.textContent = "The classifier is not reachable right now. Reload the page in a moment.";
      serviceEl.classList.add("version-error");
      versionEl.textContent = "API unreachable";
      return;
    }
    const accuracy = model && model.metrics && model.metrics.accuracy;
    serviceEl.textContent = typeof accuracy === "number"
      ? `Ready. Right about ${Math.floor(accuracy * 100)} times in 100 on test photos it had never seen.`
      : "Ready.";
    const parts = [];
    if (info && info.version) parts.push(`API ${info.version}`);
    const modelVersion = (model && model.version) || (info && info.model_version);
    if (modelVersion) parts.push(`model ${modelVersion}`);
    const backend = model && model.backend;
    if (backend) parts.push(backend);
    versionEl.textContent = parts.join(" · ") || "API online";
  }

  // --- events --------------------------------------------------------------------------
  input.addEventListener("change", () => {
    const picked = Array.from(input.files);
    input.value = ""; // picking the same file again must fire "change" again
    handleFiles(picked);
  });

  dropzone.addEventListener("click", (event) => {
    if (event.target === dropzone || event.target.classList.contains("drop-text")) input.click();
  });

  // The whole page accepts drops, so a near miss never makes the browser navigate to the file.
  let dragDepth = 0;
  document.addEventListener("dragenter", (event) => {
    event.preventDefault();
    dragDepth += 1;
    dropzone.classList.add("dragging");
  });
  document.addEventListener("dragleave", () => {
    dragDepth = Math.max(0, dragDepth - 1);
    if (!dragDepth) dropzone.classList.remove("dragging");
  });
  document.addEventListener("dragover", (event) => event.preventDefault());
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    dragDepth = 0;
    dropzone.classList.remove("dragging");
    if (event.dataTransfer) handleFiles(event.dataTransfer.files);
  });

  clearButton.addEventListener("click", () => {
    results.replaceChildren();
    clearButton.hidden = true;
    setStatus("Results cleared.");
    input.focus();
  });

  loadInfo();
})();
