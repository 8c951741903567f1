// The PixyProxy gallery: a client of the public API (jobs, listing, search, detail, content, delete).
// No framework, no build step. Everything user-supplied is written with textContent, never as HTML.

const PAGE_SIZE = 48;
const THUMB_WIDTH = 256;
const POLL_MS = 700;
const SEARCH_DEBOUNCE_MS = 300;
const KEY_STORAGE = "pixyproxy.api-key";

const $ = (id) => document.getElementById(id);
const grid = $("grid");
const statusLine = $("status");

const state = {
  keyRequired: document.querySelector('meta[name="pixyproxy-key-required"]')?.content === "true",
  key: sessionStorage.getItem(KEY_STORAGE),
  query: "",
  next: null, // the Link rel="next" of the current search: a cursor only means something with its own q
  loading: false,
  listing: 0, // bumped per search, so an answer to an older search is dropped
  details: new Map(), // guid -> ImageDetail
  current: null, // { detail, url, blob, opener } while the detail view is open
};

class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || { title: `HTTP ${status}`, detail: "" };
  }
}

// ---- API -------------------------------------------------------------------------------------

async function api(path, { method = "GET", headers = {}, body } = {}) {
  const all = { ...headers };
  if (state.key) all.Authorization = `Bearer ${state.key}`;
  if (body !== undefined) all["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers: all,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.ok) return response;
  let problem = null;
  try {
    problem = await response.json();
  } catch {
    // Not a problem document: the status alone says it.
  }
  if (response.status === 401) {
    forgetKey();
    askForKey("The key was refused; enter a valid one.");
  }
  throw new ApiError(response.status, problem);
}

function nextLink(response) {
  const link = response.headers.get("Link") || "";
  const match = /<([^>]+)>\s*;\s*rel="?next"?/.exec(link);
  return match ? match[1] : null;
}

function describe(error) {
  if (error instanceof ApiError) {
    return [error.problem.title, error.problem.detail].filter(Boolean).join(": ");
  }
  return String(error?.message || error);
}

function say(message, { error = false } = {}) {
  statusLine.textContent = message;
  statusLine.classList.toggle("error", error);
}

// ---- API key ---------------------------------------------------------------------------------

let keyWaiters = [];

function forgetKey() {
  state.key = null;
  sessionStorage.removeItem(KEY_STORAGE);
}

function askForKey(message = "") {
  const dialog = $("key-dialog");
  $("key-error").textContent = message;
  if (!dialog.open) dialog.showModal();
  $("api-key").focus();
  return new Promise((resolve) => keyWaiters.push(resolve));
}

$("key-dialog").addEventListener("cancel", (event) => event.preventDefault()); // a key is required
$("key-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const key = $("api-key").value.trim();
  if (!key) return;
  state.key = key;
  try {
    await api("/image?limit=1");
  } catch (error) {
    $("key-error").textContent = describe(error);
    return;
  }
  sessionStorage.setItem(KEY_STORAGE, key);
  $("api-key").value = "";
  $("key-dialog").close();
  const waiters = keyWaiters;
  keyWaiters = [];
  waiters.forEach((resolve) => resolve());
});

// ---- Cards and thumbnails ----------------------------------------------------------------------

const thumbnails = new IntersectionObserver(
  (entries) => {
    for (const entry of entries) {
      if (!entry.isIntersecting) continue;
      thumbnails.unobserve(entry.target);
      loadThumbnail(entry.target);
    }
  },
  { rootMargin: "600px 0px" },
);

async function loadThumbnail(img) {
  try {
    const response = await api(`/image/${img.dataset.guid}/thumbnail?w=${THUMB_WIDTH}`);
    const blob = await response.blob();
    if (!img.isConnected) return;
    img.src = URL.createObjectURL(blob);
  } catch (error) {
    img.closest(".card")?.classList.add("broken");
  }
}

function releaseCard(card) {
  const img = card.querySelector("img.thumb");
  if (img) {
    thumbnails.unobserve(img);
    if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
  }
}

function imageCard(detail) {
  state.details.set(detail.guid, detail);
  const card = document.createElement("li");
  card.className = "card";
  card.dataset.guid = detail.guid;
  const open = document.createElement("button");
  open.type = "button";
  open.className = "open";
  open.addEventListener("click", () => openDetail(detail.guid, open));
  const img = document.createElement("img");
  img.className = "thumb";
  img.alt = detail.prompt;
  img.dataset.guid = detail.guid;
  img.decoding = "async";
  const caption = document.createElement("span");
  caption.className = "caption";
  caption.textContent = detail.prompt;
  open.append(img, caption);
  card.append(open);
  thumbnails.observe(img);
  return card;
}

function appendImages(details) {
  const fragment = document.createDocumentFragment();
  for (const detail of details) {
    if (grid.querySelector(`li[data-guid="${detail.guid}"]`)) continue; // already shown by its job
    fragment.append(imageCard(detail));
  }
  grid.append(fragment);
}

function clearGrid() {
  for (const card of grid.querySelectorAll("li.card:not(.pending):not(.failed):not(.canceled)")) {
    releaseCard(card);
    card.remove();
  }
  state.details.clear();
}

// ---- Listing, search, scrolling ----------------------------------------------------------------

async function loadPage({ reset = false } = {}) {
  if (reset) {
    state.listing += 1;
    state.next = null;
    state.loading = false;
    clearGrid();
  } else if (state.loading || !state.next) {
    return;
  }
  const listing = state.listing;
  const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (state.query) params.set("q", state.query);
  const url = reset ? `/image?${params}` : state.next;
  state.loading = true;
  try {
    const response = await api(url);
    const details = await response.json();
    if (listing !== state.listing) return; // another search started meanwhile
    state.next = nextLink(response);
    appendImages(details);
    const shown = grid.querySelectorAll("li.card:not(.pending)").length;
    if (shown === 0) say(state.query ? `No image matches “${state.query}”.` : "No images yet: make one above.");
    else say(state.next ? `${shown} images shown; scroll for more.` : `${shown} images.`);
  } catch (error) {
    if (listing === state.listing) say(`Could not load images: ${describe(error)}`, { error: true });
  } finally {
    if (listing === state.listing) state.loading = false;
  }
  if (listing === state.listing && state.next && sentinelNear()) loadPage();
}

function sentinelNear() {
  return $("more").getBoundingClientRect().top < window.innerHeight + 600;
}

new IntersectionObserver(
  (entries) => {
    if (entries.some((entry) => entry.isIntersecting)) loadPage();
  },
  { rootMargin: "600px 0px" },
).observe($("more"));

let searchTimer = null;
$("search").addEventListener("input", () => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => {
    const query = $("search").value.trim();
    if (query === state.query) return;
    state.query = query;
    loadPage({ reset: true });
  }, SEARCH_DEBOUNCE_MS);
});

// ---- Generating through the jobs API -----------------------------------------------------------

$("prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("generate").requestSubmit();
  }
});

$("generate").addEventListener("submit", async (event) => {
  event.preventDefault();
  const prompt = $("prompt").value.trim();
  if (!prompt) return;
  const body = { prompt };
  if ($("size").value) body.size = $("size").value;
  try {
    const response = await api("/image", { method: "POST", headers: { Prefer: "respond-async" }, body });
    const job = await response.json();
    $("prompt").value = "";
    trackJob(job);
  } catch (error) {
    say(`Could not generate: ${describe(error)}`, { error: true });
  }
});

function jobCard(job) {
  const card = document.createElement("li");
  card.className = "card pending";
  card.dataset.job = job.id;
  const placeholder = document.createElement("div");
  placeholder.className = "thumb";
  placeholder.setAttribute("role", "img");
  placeholder.setAttribute("aria-label", `Generating: ${job.prompt}`);
  const info = document.createElement("div");
  info.className = "job";
  const stateLine = document.createElement("p");
  stateLine.className = "state";
  const prompt = document.createElement("p");
  prompt.className = "caption";
  prompt.textContent = job.prompt;
  const cancel = document.createElement("button");
  cancel.type = "button";
  cancel.className = "secondary cancel";
  cancel.textContent = "Cancel";
  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    try {
      const response = await api(`/jobs/${job.id}/cancel`, { method: "POST" });
      showJob(card, await response.json());
    } catch (error) {
      cancel.disabled = false;
      say(`Could not cancel: ${describe(error)}`, { error: true });
    }
  });
  info.append(stateLine, prompt, cancel);
  card.append(placeholder, info);
  return card;
}

function showJob(card, job) {
  const stateLine = card.querySelector(".state");
  if (job.status === "queued" || job.status === "running") {
    stateLine.textContent = job.status === "queued" ? "Queued…" : "Generating…";
    return;
  }
  const info = card.querySelector(".job");
  card.classList.remove("pending");
  if (job.status === "succeeded" && job.image) {
    const image = imageCard(job.image);
    card.replaceWith(image);
    say("Image ready.");
    return;
  }
  card.classList.add(job.status === "failed" ? "failed" : "canceled");
  info.querySelector(".cancel")?.remove();
  if (job.status === "failed") {
    stateLine.textContent = "Failed";
    const title = document.createElement("p");
    title.className = "problem-title";
    title.textContent = job.error?.title || "The generation failed";
    const detail = document.createElement("p");
    detail.className = "problem-detail";
    detail.textContent = job.error?.detail || "";
    info.append(title, detail);
  } else {
    stateLine.textContent = "Canceled";
  }
  const dismiss = document.createElement("button");
  dismiss.type = "button";
  dismiss.className = "secondary";
  dismiss.textContent = "Dismiss";
  dismiss.addEventListener("click", () => {
    card.remove();
    grid.focus();
  });
  info.append(dismiss);
}

async function trackJob(job) {
  const card = jobCard(job);
  grid.prepend(card);
  showJob(card, job);
  while (card.isConnected && card.classList.contains("pending")) {
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    try {
      const response = await api(`/jobs/${job.id}`);
      if (card.isConnected && card.classList.contains("pending")) showJob(card, await response.json());
    } catch (error) {
      say(`Could not follow the job: ${describe(error)}`, { error: true });
    }
  }
}

// ---- Detail view ---------------------------------------------------------------------------------

function field(list, name, value, { mono = false, id } = {}) {
  const dt = document.createElement("dt");
  dt.textContent = name;
  const dd = document.createElement("dd");
  dd.textContent = value ?? "—";
  if (mono) dd.classList.add("mono");
  if (id) dd.id = id;
  list.append(dt, dd);
}

function formatBytes(n) {
  return n < 1024 ? `${n} B` : n < 1048576 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 1048576).toFixed(1)} MiB`;
}

async function openDetail(guid, opener) {
  const detail = state.details.get(guid);
  if (!detail) return;
  const generation = detail.generation || {};
  const list = $("detail-fields");
  list.replaceChildren();
  $("detail-title").textContent = detail.prompt;
  field(list, "Prompt", detail.prompt, { id: "field-prompt" });
  field(list, "Revised prompt", generation.revised_prompt, { id: "field-revised" });
  field(list, "Generator", generation.generator || detail.generator, { id: "field-generator" });
  field(list, "Model", generation.model, { id: "field-model" });
  field(list, "Latency", generation.latency_ms == null ? null : `${generation.latency_ms} ms`, {
    id: "field-latency",
  });
  if ("owner" in detail) field(list, "Owner", detail.owner, { id: "field-owner" });
  field(list, "Size", formatBytes(detail.size_bytes), { id: "field-size" });
  field(list, "Created", new Date(detail.created_at).toLocaleString(), { id: "field-created" });
  field(list, "SHA-256", detail.sha256, { mono: true, id: "field-sha256" });
  $("detail-status").textContent = "";
  const img = $("detail-image");
  img.alt = detail.prompt;
  img.removeAttribute("src");
  state.current = { detail, url: null, blob: null, opener };
  $("detail").showModal();
  try {
    const response = await api(`/image/${guid}/content`);
    const blob = await response.blob();
    if (state.current?.detail !== detail) return;
    state.current.blob = blob;
    state.current.url = URL.createObjectURL(blob);
    img.src = state.current.url;
  } catch (error) {
    $("detail-status").textContent = `Could not load the image: ${describe(error)}`;
  }
}

$("detail-image").addEventListener("load", () => {
  const img = $("detail-image");
  const detail = state.current?.detail;
  if (detail) $("field-size").textContent = `${img.naturalWidth} × ${img.naturalHeight} px, ${formatBytes(detail.size_bytes)}`;
});

$("close-detail").addEventListener("click", () => $("detail").close());

$("detail").addEventListener("close", () => {
  const current = state.current;
  state.current = null;
  if (!current) return;
  if (current.url) URL.revokeObjectURL(current.url);
  $("detail-image").removeAttribute("src");
  if (current.opener?.isConnected) current.opener.focus();
  else grid.focus();
});

$("copy-prompt").addEventListener("click", async () => {
  const detail = state.current?.detail;
  if (!detail) return;
  try {
    await navigator.clipboard.writeText(detail.prompt);
    $("detail-status").textContent = "Prompt copied.";
  } catch (error) {
    $("detail-status").textContent = `Could not copy: ${describe(error)}`;
  }
});

$("download").addEventListener("click", async () => {
  const current = state.current;
  if (!current) return;
  try {
    const blob = current.blob || (await (await api(`/image/${current.detail.guid}/content`)).blob());
    const url = URL.createObjectURL(blob);
    const link = document.createElement("a");
    link.href = url;
    link.download = current.detail.filename;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (error) {
    $("detail-status").textContent = `Could not download: ${describe(error)}`;
  }
});

$("delete").addEventListener("click", () => {
  if (!state.current) return;
  $("confirm-prompt").textContent = state.current.detail.prompt;
  $("confirm-delete").returnValue = "";
  $("confirm-delete").showModal();
});

$("confirm-delete").addEventListener("close", async () => {
  const current = state.current;
  if ($("confirm-delete").returnValue !== "delete" || !current) return;
  const guid = current.detail.guid;
  try {
    await api(`/image/${guid}`, { method: "DELETE" });
  } catch (error) {
    $("detail-status").textContent = `Could not delete: ${describe(error)}`;
    return;
  }
  const card = grid.querySelector(`li[data-guid="${guid}"]`);
  const neighbour = card?.nextElementSibling || card?.previousElementSibling;
  if (card) {
    releaseCard(card);
    card.remove();
  }
  state.details.delete(guid);
  current.opener = neighbour?.querySelector("button") || null;
  $("detail").close();
  say("Image deleted.");
});

// ---- Start -----------------------------------------------------------------------------------------

async function start() {
  if (state.keyRequired && !state.key) await askForKey();
  await loadPage({ reset: true });
}

start();
