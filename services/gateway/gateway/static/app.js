// The classifier page: sends a URL or a file to POST /predict and draws the answer.
// Plain browser JavaScript, no build step and nothing loaded from elsewhere.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const urlForm = $("url-form");
  const urlInput = $("url-input");
  const fileInput = $("file-input");
  const dropZone = $("drop-zone");
  const status = $("status");
  const errorBox = $("error");
  const result = $("result");
  const preview = $("preview-image");
  const caption = $("preview-caption");
  const keyForm = $("key-form");
  const keyInput = $("key-input");
  const KEY_STORE = "clothing-gateway-api-key"; // sessionStorage: this tab only, gone when closed

  let latestRequest = 0; // answers to older requests are dropped
  let objectUrl = null; // the current upload's preview, revoked when replaced

  // Plain words for failures the API cannot describe itself.
  const STATUS_WORDS = {
    0: "The gateway could not be reached. Check that it is running and try again.",
    413: "The image is too large for the gateway.",
    429: "The gateway is busy. Wait a moment and try again.",
    500: "The gateway hit an internal error.",
    502: "The gateway got a bad answer from another server.",
    503: "The model is not available right now. Try again in a few seconds.",
    504: "The gateway gave up waiting. Try again, or try a smaller image.",
  };

  const percent = (p) => `${(p * 100).toFixed(1)}%`;
  const ms = (value) => `${Math.round(value)} ms`;

  function setStatus(text) {
    status.textContent = text;
  }

  function clearError() {
    errorBox.replaceChildren();
  }

  function showError(message, details) {
    const title = document.createElement("h2");
    title.className = "error-title";
    title.textContent = "The image could not be classified";
    const text = document.createElement("p");
    text.className = "error-message";
    text.textContent = message;
    errorBox.replaceChildren(title, text);
    if (details) {
      const small = document.createElement("p");
      small.className = "small";
      small.textContent = details;
      errorBox.append(small);
    }
  }

  // The server's own timing from `Server-Timing: download;dur=12.3, ..., total;dur=20.1`:
  // its `total` metric, else the sum of the metrics it sent.
  function serverMillis(headers) {
    const header = headers.get("Server-Timing");
    if (!header) return null;
    let sum = 0;
    let found = false;
    for (const metric of header.split(",")) {
      const match = /^\s*([^;\s]+)\s*;.*?dur=([0-9.]+)/.exec(metric);
      if (!match) continue;
      if (match[1] === "total") return Number(match[2]);
      sum += Number(match[2]);
      found = true;
    }
    return found ? sum : null;
  }

  function showPreview(src, label) {
    preview.hidden = false;
    preview.alt = label;
    caption.textContent = "";
    preview.onerror = () => {
      // The browser may not reach an image the gateway could; the result still stands.
      preview.hidden = true;
      caption.textContent = "This browser could not load the image to show it here.";
    };
    preview.src = src;
  }

  function drawBars(scores, top) {
    const bars = $("bars");
    const rows = Object.entries(scores).sort((a, b) => b[1] - a[1]);
    bars.replaceChildren(
      ...rows.map(([label, probability]) => {
        const item = document.createElement("li");
        item.className = label === top ? "bar-row top" : "bar-row";
        item.dataset.label = label;
        item.dataset.score = String(probability);
        const name = document.createElement("span");
        name.className = "bar-label";
        name.textContent = label;
        const track = document.createElement("span");
        track.className = "bar-track";
        track.setAttribute("aria-hidden", "true");
        const fill = document.createElement("span");
        fill.className = "bar-fill";
        fill.style.width = `${Math.max(0, Math.min(1, probability)) * 100}%`;
        track.append(fill);
        const value = document.createElement("span");
        value.className = "bar-value";
        value.textContent = percent(probability);
        item.append(name, track, value);
        if (label === top) {
          const badge = document.createElement("span");
          badge.className = "visually-hidden";
          badge.textContent = " (top class)";
          item.append(badge);
        }
        return item;
      })
    );
  }

  function showResult(body, clientMs, serverMs, requestId) {
    const topScore = body.scores[body.top];
    $("top-label").textContent = body.top;
    $("top-score").textContent = `(${percent(topScore)})`;
    drawBars(body.scores, body.top);
    $("model-name").textContent = body.model.name;
    // "3 (canary)" during a canary rollout; just "3" when the server has no version labels
    const route = body.model.route;
    const version =
      route === "stable" || route === "canary"
        ? `${body.model.version} (${route})`
        : String(body.model.version);
    $("model-version").textContent = version;
    $("latency").textContent =
      serverMs === null
        ? `${ms(clientMs)} round trip`
        : `${ms(clientMs)} round trip, ${ms(serverMs)} in the gateway`;
    $("request-id").textContent = requestId || "none";
    result.hidden = false;
    setStatus(
      `Most likely ${body.top} (${percent(topScore)}), by ${body.model.name} ` +
        `version ${version}, in ${ms(clientMs)}.`
    );
  }

  async function readError(response) {
    let code = "";
    let message = "";
    try {
      const body = await response.json();
      if (body && body.error) {
        code = String(body.error.code || "");
        message = String(body.error.message || "");
      }
    } catch (_) {
      // not JSON: fall back to plain words for the status
    }
    if (!message) {
      message =
        STATUS_WORDS[response.status] ||
        `The gateway answered ${response.status} ${response.statusText}.`;
    } else {
      message = message.charAt(0).toUpperCase() + message.slice(1);
      if (!/[.!?]$/.test(message)) message += ".";
    }
    return { code, message };
  }

  // The API key, when the gateway needs one: typed once, kept in this tab's session storage.
  function storedKey() {
    try {
      return sessionStorage.getItem(KEY_STORE) || "";
    } catch (_) {
      return ""; // storage disabled: the field still works for this page view
    }
  }

  function storeKey(key) {
    try {
      if (key) sessionStorage.setItem(KEY_STORE, key);
      else sessionStorage.removeItem(KEY_STORE);
    } catch (_) {
      // storage disabled: nothing to keep
    }
  }

  function showKeyField() {
    if (!keyForm.hidden) return;
    keyInput.value = storedKey();
    keyForm.hidden = false;
  }

  function authorization() {
    const key = keyForm.hidden ? storedKey() : keyInput.value.trim();
    return key ? { Authorization: `Bearer ${key}` } : {};
  }

  async function classify(init, src, label) {
    const id = ++latestRequest;
    clearError();
    result.hidden = true;
    setStatus("Classifying…");
    const started = performance.now();
    let response;
    try {
      const headers = { ...(init.headers || {}), ...authorization() };
      response = await fetch("/predict", { method: "POST", ...init, headers });
    } catch (_) {
      if (id !== latestRequest) return;
      setStatus("");
      showError(STATUS_WORDS[0]);
      return;
    }
    const requestId = response.headers.get("X-Request-ID");
    if (!response.ok) {
      const { code, message } = await readError(response);
      if (id !== latestRequest) return;
      setStatus("");
      const details = [`HTTP ${response.status}`, code, requestId && `request id ${requestId}`]
        .filter(Boolean)
        .join(" · ");
      showError(message, details);
      if (response.status === 401 || response.status === 403) {
        showKeyField();
        keyInput.focus();
      }
      return;
    }
    let body;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    const clientMs = performance.now() - started;
    if (id !== latestRequest) return;
    if (!body || !body.scores || !body.model || !(body.top in body.scores)) {
      setStatus("");
      showError("The gateway's answer did not look like a classification.");
      return;
    }
    showPreview(src, label);
    showResult(body, clientMs, serverMillis(response.headers), requestId);
  }

  function classifyFile(file) {
    if (!file) return;
    if (objectUrl) URL.revokeObjectURL(objectUrl);
    objectUrl = URL.createObjectURL(file);
    const form = new FormData();
    form.append("file", file, file.name);
    classify({ body: form }, objectUrl, `The uploaded photo ${file.name}`);
  }

  keyInput.addEventListener("input", () => storeKey(keyInput.value.trim()));
  keyForm.addEventListener("submit", (event) => event.preventDefault());
  $("key-forget").addEventListener("click", () => {
    keyInput.value = "";
    storeKey("");
    keyInput.focus();
  });

  // Ask the gateway whether it needs a key; if it cannot say, a 401 shows the field later.
  fetch("/api/config")
    .then((response) => (response.ok ? response.json() : null))
    .then((config) => {
      if (config && config.api_key_required) showKeyField();
    })
    .catch(() => {});

  urlForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const url = urlInput.value.trim();
    if (!url) {
      clearError();
      showError("Type or paste the address of an image first.");
      urlInput.focus();
      return;
    }
    classify(
      {
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ url }),
      },
      url,
      `The image at ${url}`
    );
  });

  fileInput.addEventListener("change", () => {
    classifyFile(fileInput.files && fileInput.files[0]);
    // choosing the same file again should classify it again
    fileInput.value = "";
  });

  // Drop anywhere on the zone; keyboard users reach the same file input with Tab.
  for (const type of ["dragenter", "dragover"]) {
    dropZone.addEventListener(type, (event) => {
      event.preventDefault();
      if (event.dataTransfer) event.dataTransfer.dropEffect = "copy";
      dropZone.classList.add("dragging");
    });
  }
  dropZone.addEventListener("dragleave", (event) => {
    if (!dropZone.contains(event.relatedTarget)) dropZone.classList.remove("dragging");
  });
  dropZone.addEventListener("drop", (event) => {
    event.preventDefault();
    dropZone.classList.remove("dragging");
    const files = event.dataTransfer && event.dataTransfer.files;
    if (files && files.length) {
      classifyFile(files[0]);
    } else {
      const url = event.dataTransfer && event.dataTransfer.getData("text/uri-list");
      if (url) {
        urlInput.value = url.split("\n")[0].trim();
        urlForm.requestSubmit();
      }
    }
  });
  // A file dropped outside the zone must not make the browser navigate away from the page.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
})();
