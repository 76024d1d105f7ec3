// The model-manager web page: plain JavaScript over the HTTP API (no build step).
// Every call carries the Bearer token kept in local storage; the download stream is read with fetch
// because EventSource cannot send an Authorization header.
"use strict";

(() => {
  const TOKEN_KEY = "model-manager.token";
  const TERMINAL = new Set(["completed", "failed", "cancelled"]);
  const state = {
    token: localStorage.getItem(TOKEN_KEY) || "",
    downloads: new Map(), // download_id -> last DownloadStatus
    stream: null, // AbortController of the all-downloads stream
    openRepo: null,
    context: 8192, // the context the fit badges are computed for
    openShares: new Set(), // model ids whose "other tools" row is open
  };

  const $ = (selector, root = document) => root.querySelector(selector);

  // ------------------------------------------------------------------ formatting

  function fmtSize(bytes) {
    if (bytes === null || bytes === undefined) return "?";
    let size = Number(bytes);
    for (const unit of ["B", "kB", "MB", "GB", "TB"]) {
      if (Math.abs(size) < 1000 || unit === "TB") {
        return unit === "B" || size >= 100 ? `${Math.round(size)} ${unit}` : `${size.toFixed(1).replace(/\.0$/, "")} ${unit}`;
      }
      size /= 1000;
    }
    return "";
  }

  function fmtCount(count) {
    if (count === null || count === undefined) return "–";
    for (const [limit, suffix] of [[1e9, "B"], [1e6, "M"], [1e3, "k"]]) {
      if (Math.abs(count) >= limit) return `${(count / limit).toFixed(1).replace(/\.0$/, "")}${suffix}`;
    }
    return String(count);
  }

  function fmtDate(value) {
    return value ? String(value).slice(0, 10) : "–";
  }

  function fmtDuration(seconds) {
    if (seconds === null || seconds === undefined || seconds < 0) return "–";
    const total = Math.round(seconds);
    const h = Math.floor(total / 3600);
    const m = Math.floor((total % 3600) / 60);
    const s = String(total % 60).padStart(2, "0");
    return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
  }

  // The service reports megabits per second; downloads are read in megabytes per second.
  function fmtSpeed(mbps) {
    return mbps === null || mbps === undefined ? "–" : `${fmtSize((mbps * 1e6) / 8)}/s`;
  }

  // Builds DOM nodes; text always goes in as text, never as HTML (Hub data is untrusted).
  function h(tag, props, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") el.className = value;
      else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
      else if (key === "dataset") Object.assign(el.dataset, value);
      else el.setAttribute(key, value === true ? "" : value);
    }
    setChildren(el, ...children);
    return el;
  }

  // Replaces an element's children; nested lists are flattened and null/false entries skipped.
  function setChildren(el, ...children) {
    const nodes = children.flat(Infinity).filter((child) => child !== null && child !== undefined && child !== false);
    el.replaceChildren(...nodes.map((child) => (child instanceof Node ? child : String(child))));
  }

  function showNote(el, text) {
    setChildren(el, h("p", { class: "empty" }, text));
  }

  // "owner/name" with a line-break opportunity after the slash, so narrow columns break there first.
  function repoName(repoId) {
    const [owner, ...rest] = String(repoId).split("/");
    return h("span", { class: "repo" }, rest.length ? [`${owner}/`, h("wbr"), rest.join("/")] : owner);
  }

  // ------------------------------------------------------------------ the API

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function errorFrom(response) {
    let message = `The service answered HTTP ${response.status}`;
    let code = "HTTP_ERROR";
    try {
      const body = await response.json();
      if (body && typeof body.message === "string") {
        message = body.message;
        code = body.error_code || code;
      } else if (body && typeof body.detail === "string") {
        message = body.detail;
      }
    } catch (_) {
      // not JSON: keep the status line
    }
    return new ApiError(response.status, code, message);
  }

  function authHeaders(token = state.token) {
    return { Authorization: `Bearer ${token}` };
  }

  async function api(path, { method = "GET", query, body, form, token } = {}) {
    const url = new URL(path, window.location.origin);
    for (const [key, value] of Object.entries(query || {})) {
      if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, value);
    }
    const headers = authHeaders(token);
    let payload;
    if (form) {
      payload = form;
    } else if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(url, { method, headers, body: payload });
    } catch (err) {
      throw new ApiError(0, "NETWORK_ERROR", `Cannot reach the service: ${err.message}`);
    }
    if (!response.ok) throw await errorFrom(response);
    const text = await response.text();
    return { status: response.status, data: text ? JSON.parse(text) : null };
  }

  // Reads a text/event-stream and calls onData with each event's JSON; returns when the stream ends.
  async function readEvents(path, onData, signal) {
    const response = await fetch(path, {
      headers: { ...authHeaders(), Accept: "text/event-stream" },
      signal,
      cache: "no-store",
    });
    if (!response.ok) throw await errorFrom(response);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let data = [];
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let newline;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, newline).replace(/\r$/, "");
        buffer = buffer.slice(newline + 1);
        if (line === "") {
          if (data.length) onData(JSON.parse(data.join("\n")));
          data = [];
        } else if (!line.startsWith(":")) {
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "data") data.push(text);
        }
      }
    }
  }

  function handleError(err) {
    if (err.name === "AbortError") return;
    if (err.status === 401) {
      askForToken(err.message);
      return;
    }
    showBanner(err.message, err.code);
  }

  // ------------------------------------------------------------------ messages

  function showBanner(message, code) {
    const banner = $("#banner");
    setChildren($(".banner-text", banner), h("strong", {}, "Error: "), message, code ? h("span", { class: "code" }, code) : null);
    banner.hidden = false;
  }

  let toastTimer = null;
  function toast(message) {
    const el = $("#toast");
    el.textContent = message;
    el.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => (el.hidden = true), 4000);
  }

  // ------------------------------------------------------------------ token

  function askForToken(message) {
    stopDownloadStream();
    const dialog = $("#token-dialog");
    const error = $("#token-error");
    error.hidden = !message;
    error.textContent = message || "";
    dialog.hidden = false;
    $("#token-input").focus();
  }

  async function saveToken(event) {
    event.preventDefault();
    const candidate = $("#token-input").value.trim();
    const error = $("#token-error");
    try {
      await api("/local/storage/stats", { token: candidate });
    } catch (err) {
      error.textContent = err.message;
      error.hidden = false;
      return;
    }
    state.token = candidate;
    localStorage.setItem(TOKEN_KEY, candidate);
    $("#token-input").value = "";
    $("#token-dialog").hidden = true;
    start();
  }

  function forgetToken() {
    localStorage.removeItem(TOKEN_KEY);
    state.token = "";
    askForToken();
  }

  // ------------------------------------------------------------------ tabs

  function showTab(name) {
    for (const tab of document.querySelectorAll(".tab")) tab.setAttribute("aria-selected", String(tab.dataset.tab === name));
    for (const panel of document.querySelectorAll(".panel")) panel.hidden = panel.dataset.panel !== name;
    if (window.location.hash !== `#${name}`) history.replaceState(null, "", `#${name}`);
    if (name === "library" && state.token) {
      refreshLibrary();
      refreshFound();
      refreshStorage();
    }
  }

  // ------------------------------------------------------------------ discover

  function searchFilters(form) {
    const filters = {};
    for (const key of ["task", "license", "author"]) {
      if (form[key].value.trim()) filters[key] = form[key].value.trim();
    }
    for (const key of ["min_downloads", "min_likes"]) {
      if (form[key].value !== "") filters[key] = Number(form[key].value);
    }
    const tags = form.tags.value.split(",").map((tag) => tag.trim()).filter(Boolean);
    if (tags.length) filters.tags = tags;
    if (form.gguf.checked) filters.gguf = true;
    return filters;
  }

  async function search(event) {
    event.preventDefault();
    const form = event.target;
    const results = $("#results");
    const filters = searchFilters(form);
    showNote(results, "Searching…");
    try {
      const { data } = await api("/hub/search", {
        query: {
          query: form.query.value.trim(),
          sort: form.sort.value,
          limit: 30,
          filters_json: Object.keys(filters).length ? JSON.stringify(filters) : "",
        },
      });
      renderResults(data);
    } catch (err) {
      showNote(results, "No results.");
      handleError(err);
    }
  }

  function renderResults(models) {
    const results = $("#results");
    if (!models.length) {
      showNote(results, "No models match.");
      return;
    }
    const rows = models.map((model) =>
      h(
        "tr",
        { dataset: { repo: model.repo_id }, class: model.repo_id === state.openRepo ? "selected" : null },
        h("td", {}, repoName(model.repo_id), h("div", { class: "tags optional" }, (model.tags || []).slice(0, 4).map((tag) => h("span", { class: "tag" }, tag)))),
        h("td", { class: "optional" }, model.task || "–"),
        h("td", { class: "num" }, fmtCount(model.downloads)),
        h("td", { class: "num" }, fmtCount(model.likes)),
        h("td", { class: "num optional" }, fmtDate(model.last_modified)),
        h("td", { class: "num" }, h("button", { type: "button", class: "small", onclick: () => openModel(model.repo_id) }, "Providers")),
      ),
    );
    setChildren(
      results,
      h(
        "table",
        { class: "table" },
        h("thead", {}, h("tr", {}, h("th", {}, "Model"), h("th", { class: "optional" }, "Task"), h("th", { class: "num" }, "Downloads"), h("th", { class: "num" }, "Likes"), h("th", { class: "num optional" }, "Updated"), h("th", {}, ""))),
        h("tbody", {}, rows),
      ),
    );
  }

  async function openModel(repoId) {
    state.openRepo = repoId;
    for (const row of document.querySelectorAll("#results tr[data-repo]")) row.classList.toggle("selected", row.dataset.repo === repoId);
    const details = $("#details");
    details.hidden = false;
    $(".discover-body").classList.add("with-details");
    setChildren(details, h("h2", {}, repoId), h("p", { class: "empty" }, "Loading providers…"));
    const path = `/hub/model/${repoId.split("/").map(encodeURIComponent).join("/")}`;
    const [info, providers] = await Promise.allSettled([api(path), api(`${path}/gguf-providers`)]);
    if (state.openRepo !== repoId) return; // another model was opened meanwhile
    if (info.status === "rejected") {
      setChildren(details, h("h2", {}, repoId), h("p", { class: "form-error" }, info.reason.message));
      handleError(info.reason);
      return;
    }
    if (providers.status === "rejected") handleError(providers.reason);
    renderDetails(info.value.data, providers.status === "fulfilled" ? providers.value.data : []);
    if (providers.status === "fulfilled" && providers.value.data.length) loadFits(repoId);
  }

  // ------------------------------------------------------------------ will it run here?

  const FIT_BADGES = { full_gpu: ["Full GPU", "good"], partial_gpu: ["Partial", "warn"], cpu: ["CPU", "info"], too_large: ["Too large", "bad"] };

  function fmtGiB(bytes) {
    return bytes === null || bytes === undefined ? "–" : `${(bytes / 2 ** 30).toFixed(2)} GiB`;
  }

  // The variant's badge; hovering shows the memory breakdown and the reasons.
  function fitBadge(fit) {
    if (!fit) return h("span", { class: "pill fit unknown", title: "Its header could not be read" }, "?");
    const [label, tone] = FIT_BADGES[fit.fit] || [fit.fit, ""];
    const m = fit.memory;
    const title = [
      `Weights ${fmtGiB(m.weights_bytes)}`, `KV cache ${fmtGiB(m.kv_cache_bytes)} (${fit.context_length} tokens)`,
      `Compute ${fmtGiB(m.compute_bytes)}`, `Overhead ${fmtGiB(m.overhead_bytes)}`, `Total ${fmtGiB(m.total_bytes)}`,
      ...fit.reasons,
    ].join("\n");
    const text = fit.fit === "partial_gpu" ? `${label} ${fit.gpu_layers}/${fit.total_layers}` : label;
    // A CSS tooltip (data-tip) rather than a title: it shows the breakdown on lines, at once, and in screenshots.
    return h("span", { class: `pill fit ${tone}`, tabindex: "0", "aria-label": `${text}. ${title}`, dataset: { fit: fit.fit, tip: title } }, text);
  }

  // Fetches every variant's fit (headers only, no download) and puts the badges into the provider tables.
  async function loadFits(repoId) {
    const path = `/hub/model/${repoId.split("/").map(encodeURIComponent).join("/")}/gguf-providers`;
    const context = state.context;
    for (const cell of document.querySelectorAll("#details td.fit-cell")) setChildren(cell, h("span", { class: "pill fit pending" }, "…"));
    let providers;
    try {
      ({ data: providers } = await api(path, { query: { fit: "true", context } }));
    } catch (err) {
      handleError(err);
      return;
    }
    if (state.openRepo !== repoId || state.context !== context) return; // another model or context meanwhile
    for (const provider of providers) {
      const box = [...document.querySelectorAll("#details .provider")].find((el) => el.dataset.repo === provider.repo_id);
      if (!box) continue;
      for (const mark of box.querySelectorAll(".best-fit")) mark.remove();
      for (const variant of provider.variants || []) {
        const cell = [...box.querySelectorAll("td.fit-cell")].find((el) => el.dataset.quant === variant.quantization);
        if (cell) setChildren(cell, fitBadge(variant.fit));
        const label = [...box.querySelectorAll("td.variant-cell")].find((el) => el.dataset.quant === variant.quantization);
        if (label && variant.quantization === provider.recommended_variant) {
          label.append(h("span", { class: "best-fit", title: "The best quality that fits entirely here" }, " ◆ best fit"));
        }
      }
    }
  }

  function contextSelector(model) {
    const choices = [2048, 4096, 8192, 16384, 32768, 65536, 131072];
    return h(
      "label",
      { class: "context-select" },
      "Context ",
      h(
        "select",
        {
          id: "fit-context",
          "aria-label": "Context length for the fit",
          onchange: (event) => {
            state.context = Number(event.currentTarget.value);
            loadFits(model.repo_id);
          },
        },
        choices.map((n) => h("option", { value: String(n), selected: n === state.context }, `${n / 1024}k tokens`)),
      ),
    );
  }

  async function refreshHardware() {
    let hw;
    try {
      ({ data: hw } = await api("/system/hardware"));
    } catch (_) {
      return; // the summary is a nicety; errors show elsewhere
    }
    const target = hw.fit_target;
    const gpus = target.gpu_free_bytes.length
      ? `GPU ${target.gpu_free_bytes.map((b) => fmtGiB(b)).join(" + ")} free`
      : "no GPU";
    const el = $("#hw-summary");
    el.textContent = `${fmtGiB(target.ram_bytes)} RAM · ${gpus}${hw.unified_memory ? " (unified)" : ""}`;
    el.title = `${hw.cpu_name}, ${hw.cpu_cores} cores · ${(hw.cpu_features || []).join(", ")}\nFit badges are for this target.`;
    el.hidden = false;
  }

  // `blocked`: why the service cannot download it (a gated provider); the button is then disabled and says why.
  function downloadButton(request, label = "Download", blocked = null) {
    return h(
      "button",
      {
        type: "button",
        class: "small primary",
        disabled: Boolean(blocked),
        title: blocked || undefined,
        dataset: { quant: request.quantization || "", file: request.filename || "" },
        onclick: (event) => startDownload(request, event.currentTarget),
      },
      label,
    );
  }

  // A variant's label; a disambiguated one ("Q4_K_M (llama-13b)") shows what tells it apart in a quieter type.
  function variantLabel(label) {
    const match = /^(\S+) \((.+)\)$/.exec(label);
    if (!match) return h("code", {}, label);
    return h("span", { class: "variant-label", title: `Download label: ${label}` }, h("code", {}, match[1]), " ", h("span", { class: "variant-qualifier" }, `(${match[2]})`));
  }

  function renderProvider(provider) {
    const variants = provider.variants && provider.variants.length
      ? provider.variants
      : provider.model_variants.map((quantization) => ({ quantization, size_bytes: null, files: [] }));
    return h(
      "div",
      {
        class: `provider${provider.is_recommended ? " recommended" : ""}${provider.downloadable === false ? " blocked" : ""}`,
        dataset: { repo: provider.repo_id, downloadable: String(provider.downloadable !== false) },
      },
      h(
        "div",
        { class: "provider-head" },
        repoName(provider.repo_id),
        provider.is_recommended ? h("span", { class: "pill good" }, "★ Recommended") : null,
        provider.gated ? h("span", { class: "pill warn" }, "Gated") : null,
        // `downloadable` (+): false when the service's HF_TOKEN cannot download it; the first reason says why.
        provider.downloadable === false
          ? h("span", { class: "pill failed not-downloadable", title: (provider.reasons || [])[0] || "" }, "Not downloadable")
          : null,
      ),
      h("div", { class: "muted" }, `${fmtCount(provider.total_downloads)} downloads · ${fmtCount(provider.likes)} likes · updated ${fmtDate(provider.last_updated)}`),
      provider.reasons && provider.reasons.length ? h("div", { class: "reasons" }, provider.reasons.join(" · ")) : null,
      h(
        "table",
        { class: "table compact" },
        h("thead", {}, h("tr", {}, h("th", {}, "Variant"), h("th", {}, "Fit"), h("th", { class: "num" }, "Size"), h("th", { class: "num" }, "Files"), h("th", {}, ""))),
        h(
          "tbody",
          {},
          variants.map((variant) =>
            h(
              "tr",
              {},
              h("td", { class: "variant-cell", dataset: { quant: variant.quantization } }, variantLabel(variant.quantization)),
              // Filled in place by loadFits, so that buttons and their state stay as they are.
              h("td", { class: "fit-cell", dataset: { quant: variant.quantization } }, h("span", { class: "pill fit pending" }, "…")),
              h("td", { class: "num" }, fmtSize(variant.size_bytes)),
              h("td", { class: "num" }, String((variant.files || []).length || "–")),
              h("td", { class: "num" }, downloadButton({ repo_id: provider.repo_id, quantization: variant.quantization }, "Download", provider.downloadable === false ? (provider.reasons || [])[0] || "Not downloadable" : null)),
            ),
          ),
        ),
      ),
    );
  }

  function renderDetails(model, providers) {
    const ownFiles = (model.files || []).filter((file) => /\.gguf$/i.test(file.filename));
    const listsItself = providers.some((provider) => provider.repo_id === model.repo_id);
    const facts = [
      ["Author", model.author],
      ["Task", model.task],
      ["License", model.license],
      ["Base model", model.base_model],
      ["Downloads", fmtCount(model.downloads)],
      ["Likes", fmtCount(model.likes)],
      ["Files", `${model.file_count} · ${fmtSize(model.total_size_bytes)}`],
    ].filter(([, value]) => value !== null && value !== undefined && value !== "");
    setChildren(
      $("#details"),
      h("div", { class: "details-head" }, h("h2", {}, repoName(model.repo_id)), model.gated ? h("span", { class: "pill warn" }, "Gated") : null,
        h("button", { type: "button", class: "link-button", "aria-label": "Close", onclick: closeDetails }, "Close")),
      model.description ? h("p", { class: "description" }, model.description) : null,
      h("dl", { class: "facts" }, facts.map(([label, value]) => [h("dt", {}, label), h("dd", {}, value)])),
      h("div", { class: "providers-head" }, h("h3", {}, "GGUF providers"), providers.length ? contextSelector(model) : null),
      providers.length
        ? h("div", { class: "providers" }, providers.map(renderProvider))
        : h("p", { class: "empty" }, "No GGUF quantizations of this model were found."),
      ownFiles.length && !listsItself
        ? [
            h("h3", {}, "GGUF files in this repo"),
            h(
              "table",
              { class: "table compact" },
              h("tbody", {}, ownFiles.map((file) =>
                h("tr", {}, h("td", { class: "filename" }, file.filename), h("td", { class: "num" }, fmtSize(file.size_bytes)),
                  h("td", { class: "num" }, downloadButton({ repo_id: model.repo_id, filename: file.filename })))),
              ),
            ),
          ]
        : null,
    );
  }

  function closeDetails() {
    state.openRepo = null;
    $("#details").hidden = true;
    $(".discover-body").classList.remove("with-details");
    for (const row of document.querySelectorAll("#results tr.selected")) row.classList.remove("selected");
  }

  async function startDownload(request, button) {
    button.disabled = true;
    try {
      const { data } = await api("/local/download", { method: "POST", body: request });
      button.textContent = "Started ✓";
      toast(`Downloading ${request.repo_id} ${request.quantization || request.filename}. Follow it under Downloads.`);
      if (!state.downloads.has(data.download_id)) refreshDownload(data.download_id);
    } catch (err) {
      button.disabled = false;
      handleError(err);
    }
  }

  // ------------------------------------------------------------------ downloads

  function stopDownloadStream() {
    if (state.stream) state.stream.abort();
    state.stream = null;
  }

  // Follows every download live; reconnects with a growing pause if the connection drops.
  function startDownloadStream() {
    stopDownloadStream();
    const controller = new AbortController();
    state.stream = controller;
    (async () => {
      let pause = 1000;
      while (!controller.signal.aborted) {
        try {
          await readEvents("/local/download/status", (status) => { pause = 1000; updateDownload(status); }, controller.signal);
        } catch (err) {
          if (controller.signal.aborted) return;
          if (err.status === 401) {
            handleError(err);
            return;
          }
        }
        await new Promise((resolve) => setTimeout(resolve, pause));
        pause = Math.min(pause * 2, 15000);
      }
    })();
  }

  async function refreshDownload(downloadId) {
    try {
      const { data } = await api(`/local/downloads/${encodeURIComponent(downloadId)}`);
      updateDownload(data);
    } catch (_) {
      // the stream will bring it
    }
  }

  function updateDownload(status) {
    const before = state.downloads.get(status.download_id);
    state.downloads.set(status.download_id, status);
    renderDownload(status);
    const active = [...state.downloads.values()].filter((item) => !TERMINAL.has(item.status)).length;
    const badge = $("#downloads-badge");
    badge.textContent = String(active);
    badge.hidden = active === 0;
    if (before && !TERMINAL.has(before.status) && status.status === "completed") {
      toast(`Downloaded ${status.filename}`);
      refreshLibrary();
      refreshStorage();
    }
  }

  function renderDownload(status) {
    const list = $("#downloads-list");
    $(".empty", list)?.remove();
    let row = list.querySelector(`.download[data-id="${CSS.escape(status.download_id)}"]`);
    if (!row) {
      row = h(
        "div",
        { class: "download", dataset: { id: status.download_id } },
        h("div", { class: "download-head" }, h("div", {}, h("span", { class: "repo" }), h("span", { class: "filename" })), h("span", { class: "pill status" })),
        h("div", { class: "progress", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100" }, h("div", { class: "progress-fill" })),
        h("div", { class: "download-foot" }, h("span", { class: "download-facts muted" }), h("span", { class: "download-actions" })),
        h("p", { class: "form-error", hidden: true }),
      );
      list.prepend(row);
    }
    const total = status.total_bytes;
    const percent = status.status === "completed" ? 100 : Math.max(0, Math.min(100, status.progress_percent || 0));
    row.dataset.status = status.status;
    $(".repo", row).textContent = status.repo_id;
    $(".filename", row).textContent = status.filename;
    const pill = $(".status", row);
    pill.textContent = status.status;
    pill.className = `pill status ${status.status}`;
    const bar = $(".progress", row);
    bar.setAttribute("aria-valuenow", String(Math.round(percent)));
    bar.className = `progress ${status.status}`;
    $(".progress-fill", row).style.width = `${percent}%`;
    const facts = [`${Math.floor(percent)}%`, `${fmtSize(status.bytes_downloaded)} of ${fmtSize(total)}`];
    if (status.status === "downloading") facts.push(fmtSpeed(status.download_speed_mbps), `ETA ${fmtDuration(status.eta_seconds)}`);
    $(".download-facts", row).textContent = facts.join(" · ");
    const actions = $(".download-actions", row);
    if (TERMINAL.has(status.status)) actions.replaceChildren();
    else if (!actions.firstChild) {
      actions.append(h("button", { type: "button", class: "small danger", onclick: () => cancelDownload(status.download_id) }, "Cancel"));
    }
    const error = $(".form-error", row);
    error.hidden = !status.error_message;
    error.textContent = status.error_message || "";
  }

  async function cancelDownload(downloadId) {
    try {
      await api(`/local/download/${encodeURIComponent(downloadId)}`, { method: "DELETE" });
      refreshDownload(downloadId);
    } catch (err) {
      handleError(err);
    }
  }

  // ------------------------------------------------------------------ library and storage

  async function refreshLibrary() {
    const list = $("#library-list");
    try {
      const { data } = await api("/local/models", { query: { q: $("#library-filter").value.trim() } });
      renderLibrary(data);
    } catch (err) {
      showNote(list, "Could not load the library.");
      handleError(err);
    }
  }

  function renderLibrary(models) {
    const list = $("#library-list");
    if (!models.length) {
      showNote(list, "No models yet. Download one from Discover or import a file.");
      return;
    }
    const rows = models.map((model) => {
      const meta = model.metadata || {};
      const open = state.openShares.has(model.model_id);
      const exports = model.exports || [];
      const row = h(
        "tr",
        { class: open ? "selected" : null, dataset: { modelId: model.model_id, repo: model.original_repo_id || "" } },
        h("td", {}, h("div", { class: "name" }, model.display_name), h("div", { class: "muted filename" }, model.file_path.split(/[\\/]/).pop())),
        h("td", {}, model.original_repo_id || h("span", { class: "muted" }, "imported"),
          model.external ? h("div", { class: "muted", title: "Registered where it lies: deleting the model keeps its file" }, "registered in place") : null),
        h("td", {}, meta.quantization ? h("code", {}, meta.quantization) : "–"),
        h("td", {}, [meta.architecture, meta.size_label].filter(Boolean).join(" · ") || "–"),
        h("td", { class: "num" }, fmtSize(model.file_size_bytes)),
        h("td", { class: "num" }, fmtDate(model.imported_at)),
        h(
          "td",
          { class: "num" },
          h(
            "div",
            { class: "row-actions" },
            h(
              "button",
              { type: "button", class: "small share-toggle", "aria-expanded": String(open), onclick: () => toggleShare(model.model_id) },
              "Other tools",
              exports.length ? h("span", { class: "badge" }, String(exports.length)) : null,
            ),
            h("button", { type: "button", class: "small danger", onclick: () => deleteModel(model) }, "Delete"),
          ),
        ),
      );
      return open ? [row, shareRow(model)] : row;
    });
    setChildren(
      list,
      h(
        "table",
        { class: "table" },
        h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "Source"), h("th", {}, "Quant"), h("th", {}, "Architecture"), h("th", { class: "num" }, "Size"), h("th", { class: "num" }, "Added"), h("th", {}, ""))),
        h("tbody", {}, rows),
      ),
    );
  }

  // ------------------------------------------------------------------ other tools: exports and run commands

  const EXPORT_TARGETS = [["ollama", "Ollama"], ["lmstudio", "LM Studio"], ["hf-cache", "HF cache"]];
  const TOOL_LABELS = { ollama: "Ollama", lmstudio: "LM Studio", "hf-cache": "HF cache", "llama.cpp": "llama.cpp", folder: "Folder" };
  const METHOD_LABELS = { hardlink: "hard link", symlink: "symlink", existing: "tool's own copy" };

  function toggleShare(modelId) {
    if (state.openShares.has(modelId)) state.openShares.delete(modelId);
    else state.openShares.add(modelId);
    refreshLibrary();
  }

  // The row under a model: where other tools see it (exports), and the commands that run it.
  function shareRow(model) {
    const exports = model.exports || [];
    const exported = new Set(exports.map((item) => item.target));
    const error = h("p", { class: "form-error share-error", role: "alert", hidden: true });
    const missing = EXPORT_TARGETS.filter(([target]) => !exported.has(target));
    return h(
      "tr",
      { class: "share-row", dataset: { modelId: model.model_id } },
      h(
        "td",
        { colspan: "7" },
        h(
          "div",
          { class: "share" },
          h(
            "section",
            { class: "share-section exports" },
            h("h3", {}, "Use it in other tools"),
            h("p", { class: "muted" }, "An export makes the tool see this model in its own folders through links: no byte is copied."),
            missing.length
              ? h("div", { class: "export-buttons" }, h("span", { class: "muted" }, "Export to"),
                  missing.map(([target, label]) =>
                    h("button", { type: "button", class: "small", dataset: { target }, onclick: (event) => exportModel(model, target, event.currentTarget, error) }, label)))
              : null,
            exports.length
              ? h(
                  "table",
                  { class: "table compact exports-table" },
                  h("tbody", {}, exports.map((item) =>
                    h(
                      "tr",
                      { class: "export", dataset: { target: item.target } },
                      h("td", {}, h("strong", {}, TOOL_LABELS[item.target] || item.target)),
                      h("td", {}, h("code", {}, item.name)),
                      h("td", {}, h("span", { class: `pill method ${item.method}`, title: (item.notes || []).join(" ") || null }, METHOD_LABELS[item.method] || item.method),
                        (item.notes || []).length ? h("div", { class: "muted" }, item.notes.join(" ")) : null),
                      h("td", { class: "num" }, h("button", { type: "button", class: "small danger", onclick: (event) => removeExport(model, item, event.currentTarget, error) }, "Remove")),
                    ))),
                )
              : h("p", { class: "empty" }, "Not exported yet."),
            error,
          ),
          h(
            "section",
            { class: "share-section run" },
            h("h3", {}, "Run it"),
            Object.entries(model.run || {}).map(([tool, command]) =>
              h(
                "div",
                { class: "run-command", dataset: { tool } },
                h("span", { class: "run-tool" }, TOOL_LABELS[tool] || tool),
                h("code", { class: "command" }, command),
                h("button", { type: "button", class: "small copy", "aria-label": `Copy the ${TOOL_LABELS[tool] || tool} command`, onclick: (event) => copyText(command, event.currentTarget) }, "Copy"),
              )),
          ),
        ),
      ),
    );
  }

  // A refusal shown where the person clicked (the banner may be scrolled away); a lost token asks again.
  function showInlineError(el, err) {
    if (err.name === "AbortError") return;
    if (err.status === 401) {
      handleError(err);
      return;
    }
    setChildren(el, h("strong", {}, "Error: "), err.message, err.code ? h("span", { class: "code" }, ` ${err.code}`) : null);
    el.hidden = false;
  }

  async function exportModel(model, target, button, error) {
    button.disabled = true;
    error.hidden = true;
    try {
      const { data } = await api(`/local/models/${encodeURIComponent(model.model_id)}/exports`, { method: "POST", body: { target } });
      toast(`${TOOL_LABELS[target]} now sees ${model.display_name} as ${data.name}`);
      await refreshLibrary();
    } catch (err) {
      button.disabled = false;
      showInlineError(error, err);
    }
  }

  async function removeExport(model, item, button, error) {
    button.disabled = true;
    error.hidden = true;
    try {
      await api(`/local/models/${encodeURIComponent(model.model_id)}/exports/${encodeURIComponent(item.target)}`, { method: "DELETE" });
      toast(`${TOOL_LABELS[item.target]} no longer sees ${item.name}`);
      await refreshLibrary();
    } catch (err) {
      button.disabled = false;
      showInlineError(error, err);
    }
  }

  // The Clipboard API needs a secure context (https or localhost); elsewhere the older copy command works.
  async function copyText(text, button) {
    let copied = false;
    if (navigator.clipboard && window.isSecureContext) {
      try {
        await navigator.clipboard.writeText(text);
        copied = true;
      } catch (_) {
        // refused (no permission, or the page is not focused): try the older way
      }
    }
    if (!copied) {
      const area = h("textarea", { class: "offscreen", readonly: true, "aria-hidden": "true" });
      area.value = text;
      document.body.append(area);
      area.select();
      try {
        copied = document.execCommand("copy");
      } catch (_) {
        copied = false;
      }
      area.remove();
    }
    button.textContent = copied ? "Copied ✓" : "Copy failed";
    if (!copied) toast("The browser refused to copy: select the command and copy it by hand.");
    setTimeout(() => (button.textContent = "Copy"), 2000);
  }

  // ------------------------------------------------------------------ found on this machine

  async function refreshFound() {
    const list = $("#found-list");
    let found;
    try {
      ({ data: found } = await api("/local/discover"));
    } catch (err) {
      showNote(list, "Could not look for other tools' models.");
      handleError(err);
      return;
    }
    renderFound(found);
  }

  function foundAction(entry, error) {
    if (entry.in_library) return h("span", { class: "pill good in-library" }, "In library");
    if (entry.import_blocked) {
      return [h("span", { class: "pill warn" }, "Cannot import"), h("div", { class: "muted why" }, entry.import_blocked)];
    }
    if (entry.zero_copy) {
      return [
        h("button", { type: "button", class: "small primary", dataset: { action: "link" }, onclick: (event) => importFound(entry, "link", event.currentTarget, error) }, "Link into library"),
        h("div", { class: "muted why" }, "No copy: one file, two names"),
      ];
    }
    return [
      h("button", { type: "button", class: "small", dataset: { action: "register" }, onclick: (event) => importFound(entry, "register", event.currentTarget, error) }, "Register"),
      h("div", { class: "muted why" }, "On another filesystem than the library, so it cannot be linked without a copy. Register keeps the file where it is."),
    ];
  }

  function renderFound(found) {
    const list = $("#found-list");
    const models = found.models || [];
    const skipped = found.skipped || [];
    const searched = found.searched || [];
    const rows = models.map((entry) => {
      const error = h("p", { class: "form-error", role: "alert", hidden: true });
      return h(
        "tr",
        { class: "found", dataset: { path: entry.path, tool: entry.tool, name: entry.name, inLibrary: String(entry.in_library) } },
        h("td", {}, h("span", { class: `pill tool ${entry.tool.replace(/\W/g, "")}` }, TOOL_LABELS[entry.tool] || entry.tool)),
        h(
          "td",
          {},
          h("div", { class: "name" }, entry.name),
          entry.repo_id && !entry.name.includes(entry.repo_id) ? h("div", { class: "muted" }, entry.repo_id) : null,
          entry.also_named && entry.also_named.length ? h("div", { class: "muted" }, `also ${entry.also_named.join(", ")}`) : null,
          h("div", { class: "muted filename path" }, entry.path),
          entry.part_paths && entry.part_paths.length > 1 ? h("div", { class: "muted" }, `${entry.part_paths.length} parts`) : null,
          entry.projector_path ? h("div", { class: "muted", title: entry.projector_path }, "Vision projector beside it (stays with the tool: not imported yet)") : null,
          error,
        ),
        h("td", {}, entry.quantization ? h("code", {}, entry.quantization) : "–"),
        h("td", { class: "num" }, fmtSize(entry.size_bytes)),
        h("td", { class: "found-action" }, foundAction(entry, error)),
      );
    });
    const where = searched.map((place) =>
      h("li", {}, h("strong", {}, TOOL_LABELS[place.tool] || place.tool), " ", h("span", { class: "filename" }, place.path), place.exists ? null : h("span", { class: "muted" }, " (not there)")));
    setChildren(
      list,
      models.length
        ? h(
            "table",
            { class: "table found-table" },
            h("thead", {}, h("tr", {}, h("th", {}, "Tool"), h("th", {}, "Model"), h("th", {}, "Quant"), h("th", { class: "num" }, "Size"), h("th", {}, ""))),
            h("tbody", {}, rows),
          )
        : h("p", { class: "empty" }, "No GGUF models found in the other tools' folders."),
      skipped.length
        ? h(
            "details",
            { class: "skipped" },
            h("summary", {}, `${skipped.length} skipped: could not be used`),
            h("ul", {}, skipped.map((skip) =>
              h("li", { dataset: { path: skip.path } }, h("strong", {}, TOOL_LABELS[skip.tool] || skip.tool), " ", h("span", { class: "filename" }, skip.path),
                h("div", { class: "muted" }, skip.reason)))),
          )
        : null,
      where.length ? h("details", { class: "searched" }, h("summary", {}, `Looked in ${searched.length} places`), h("ul", {}, where)) : null,
    );
  }

  async function importFound(entry, action, button, error) {
    const label = button.textContent;
    button.disabled = true;
    button.textContent = action === "link" ? "Linking…" : "Registering…";
    error.hidden = true;
    let result;
    try {
      ({ data: { results: [result] } } = await api("/local/discover/import", { method: "POST", body: { paths: [entry.path], action } }));
    } catch (err) {
      result = null;
      showInlineError(error, err);
    }
    if (!result || result.status === "failed") {
      if (result) showInlineError(error, new ApiError(0, result.error_code, result.message || "The import failed"));
      button.disabled = false;
      button.textContent = label;
      return;
    }
    toast(result.status === "imported" ? `Added ${entry.name} to the library` : `Already in the library: ${entry.name}`);
    refreshLibrary();
    refreshStorage();
    await refreshFound();
  }

  async function deleteModel(model) {
    if (!window.confirm(`Delete ${model.display_name}? Its file is removed from disk.`)) return;
    try {
      await api(`/local/models/${encodeURIComponent(model.model_id)}`, { method: "DELETE" });
      toast(`Deleted ${model.display_name}`);
    } catch (err) {
      handleError(err);
    }
    refreshLibrary();
    refreshStorage();
    refreshFound();
  }

  function showImported(result) {
    const verb = result.status === 201 ? "Imported" : "Already in the library:";
    toast(`${verb} ${result.data.display_name}`);
    refreshLibrary();
    refreshStorage();
    refreshFound();
  }

  async function importFile(event) {
    event.preventDefault();
    const form = event.target;
    const body = { file_path: form.file_path.value.trim(), action: form.action.value };
    if (form.display_name.value.trim()) body.display_name = form.display_name.value.trim();
    try {
      showImported(await api("/local/import", { method: "POST", body }));
      form.reset();
    } catch (err) {
      handleError(err);
    }
  }

  async function uploadFile(event) {
    event.preventDefault();
    const form = event.target;
    const button = $("button", form);
    button.disabled = true;
    button.textContent = "Uploading…";
    try {
      showImported(await api("/local/import/upload", { method: "POST", form: new FormData(form) }));
      form.reset();
    } catch (err) {
      handleError(err);
    } finally {
      button.disabled = false;
      button.textContent = "Upload";
    }
  }

  function fillMeter(meter, percent) {
    const fill = $(".meter-fill", meter);
    fill.style.width = `${Math.max(0, Math.min(100, percent))}%`;
    fill.className = `meter-fill${percent >= 90 ? " full" : percent >= 75 ? " high" : ""}`;
    meter.setAttribute("role", "meter");
    meter.setAttribute("aria-valuenow", String(Math.round(percent)));
  }

  async function refreshStorage() {
    let stats;
    try {
      ({ data: stats } = await api("/local/storage/stats"));
    } catch (err) {
      handleError(err);
      return;
    }
    const usage = Number(stats.usage_percent) || 0;
    const freeText = `${fmtSize(stats.disk_free_bytes)} free of ${stats.disk_total_gb.toFixed(1)} GB`;
    fillMeter($("#storage .meter"), usage);
    setChildren(
      $("#storage .storage-facts"),
      h("span", {}, h("strong", {}, `${usage.toFixed(1)}%`), " of the disk used · ", freeText),
      h("span", {}, h("strong", {}, String(stats.total_models)), ` model${stats.total_models === 1 ? "" : "s"} · ${fmtSize(stats.total_size_bytes)}`),
      h("span", {}, `Partial downloads ${fmtSize(stats.partial_downloads_bytes || 0)}`),
      h("span", { class: "muted filename" }, stats.storage_directory),
    );
    const mini = $("#mini-storage");
    fillMeter($(".meter", mini), usage);
    $(".mini-storage-text", mini).textContent = `${fmtSize(stats.total_size_bytes)} in library · ${freeText}`;
    mini.hidden = false;
  }

  // ------------------------------------------------------------------ start

  function start() {
    $("#banner").hidden = true;
    startDownloadStream();
    refreshStorage();
    refreshLibrary();
    if (!$("#tab-library").hidden) refreshFound(); // looking through other tools' folders only when asked to show them
    refreshHardware();
  }

  function wire() {
    for (const tab of document.querySelectorAll(".tab")) tab.addEventListener("click", () => showTab(tab.dataset.tab));
    $("#search-form").addEventListener("submit", search);
    $("#token-form").addEventListener("submit", saveToken);
    $("#forget-token").addEventListener("click", forgetToken);
    $("#import-form").addEventListener("submit", importFile);
    $("#upload-form").addEventListener("submit", uploadFile);
    $("#found-rescan").addEventListener("click", refreshFound);
    $(".banner-close").addEventListener("click", () => ($("#banner").hidden = true));
    let filterTimer = null;
    $("#library-filter").addEventListener("input", () => {
      clearTimeout(filterTimer);
      filterTimer = setTimeout(refreshLibrary, 250);
    });
    const initial = window.location.hash.slice(1);
    showTab(["discover", "downloads", "library"].includes(initial) ? initial : "discover");
    if (state.token) start();
    else askForToken();
  }

  wire();
})();
