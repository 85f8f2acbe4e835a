// The provisioner's web page: sign in with a bearer token, list my namespaces
// with a live countdown, create, extend, delete, download a kubeconfig.
// Plain DOM, no framework, no inline script or style (the page's CSP forbids
// both), no HTML parsed from strings. The token lives in this closure, and in
// sessionStorage only when the user asks; never in local storage, a cookie or a URL.
"use strict";

(function () {
  const STORAGE_KEY = "np-token";
  const API = "../api/v1/namespaces";
  const REFRESH_MS = 20000;

  let token = null;
  let items = [];
  // name -> { kubeconfig, tokenExpiresAt, url } for kubeconfigs issued in this page.
  const kubeconfigs = new Map();
  let refreshTimer = null;

  const $ = (id) => document.getElementById(id);
  const statusLine = $("status");
  const errorBox = $("error");

  function say(text) {
    statusLine.textContent = text;
  }

  function clearError() {
    errorBox.hidden = true;
    errorBox.replaceChildren();
  }

  // An API problem (RFC 9457) or a network failure, shown as title and detail.
  function showError(problem) {
    const title = document.createElement("strong");
    title.textContent = problem.status ? `${problem.title} (${problem.status})` : problem.title;
    const parts = [title];
    if (problem.detail) {
      const detail = document.createElement("p");
      detail.textContent = problem.detail;
      parts.push(detail);
    }
    errorBox.replaceChildren(...parts);
    errorBox.hidden = false;
    say("");
  }

  class ApiProblem extends Error {
    constructor(problem) {
      super(problem.detail || problem.title);
      this.problem = problem;
    }
  }

  async function api(method, path, body) {
    const headers = { Authorization: `Bearer ${token}`, Accept: "application/json" };
    const init = { method, headers, cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (e) {
      throw new ApiProblem({ title: "The provisioner did not answer", detail: "Check your connection and try again." });
    }
    const type = response.headers.get("Content-Type") || "";
    const data = type.includes("json") ? await response.json().catch(() => null) : null;
    if (!response.ok) {
      const problem = data && data.title ? data : { title: response.statusText || "Error", detail: "" };
      problem.status = response.status;
      throw new ApiProblem(problem);
    }
    return data;
  }

  function handle(error) {
    if (!(error instanceof ApiProblem)) {
      showError({ title: "Unexpected error", detail: String(error) });
      return;
    }
    if (error.problem.status === 401 && token !== null) {
      signOut();
    }
    showError(error.problem);
  }

  // ---- time -------------------------------------------------------------

  function formatLeft(ms) {
    if (ms <= 0) return "expired";
    let s = Math.floor(ms / 1000);
    const d = Math.floor(s / 86400);
    s -= d * 86400;
    const h = Math.floor(s / 3600);
    s -= h * 3600;
    const m = Math.floor(s / 60);
    s -= m * 60;
    const pad = (n) => String(n).padStart(2, "0");
    if (d > 0) return `${d}d ${h}h ${pad(m)}m`;
    if (h > 0) return `${h}h ${pad(m)}m ${pad(s)}s`;
    return `${m}m ${pad(s)}s`;
  }

  function tick() {
    const now = Date.now();
    for (const el of document.querySelectorAll("time.countdown")) {
      const at = Date.parse(el.dateTime);
      if (Number.isNaN(at)) {
        el.textContent = "unknown";
        continue;
      }
      const left = at - now;
      el.textContent = formatLeft(left);
      el.classList.toggle("soon", left > 0 && left < 5 * 60 * 1000);
      el.classList.toggle("gone", left <= 0);
    }
  }

  // ---- rendering ----------------------------------------------------------

  function card(name) {
    for (const li of $("namespaces").children) {
      if (li.dataset.name === name) return li;
    }
    const li = $("card").content.firstElementChild.cloneNode(true);
    li.dataset.name = name;
    li.setAttribute("aria-label", `Namespace ${name}`);
    li.querySelector(".name").textContent = name;
    const extend = li.querySelector("form.extend");
    extend.querySelector("input").setAttribute("aria-label", `New lifetime of ${name}, from now`);
    extend.querySelector("button").setAttribute("aria-label", `Extend ${name}`);
    extend.addEventListener("submit", (event) => {
      event.preventDefault();
      extendNamespace(name, extend.querySelector("input").value.trim(), extend.querySelector("button"));
    });
    const get = li.querySelector("button.kubeconfig");
    get.setAttribute("aria-label", `Kubeconfig of ${name}`);
    get.addEventListener("click", () => fetchKubeconfig(name, get));
    const del = li.querySelector("button.delete");
    del.setAttribute("aria-label", `Delete ${name}`);
    del.addEventListener("click", () => deleteNamespace(name, del));
    li.querySelector("textarea").setAttribute("aria-label", `Kubeconfig of ${name}`);
    return li;
  }

  function render() {
    const list = $("namespaces");
    const names = new Set(items.map((ns) => ns.name));
    for (const li of [...list.children]) {
      if (!names.has(li.dataset.name)) {
        forgetKubeconfig(li.dataset.name);
        li.remove();
      }
    }
    items.forEach((ns, i) => {
      const li = card(ns.name);
      // Only move a card that is out of place: moving a focused node blurs it.
      if (list.children[i] !== li) list.insertBefore(li, list.children[i] || null);
      const countdown = li.querySelector("time.countdown");
      countdown.dateTime = ns.expiresAt || "";
      li.querySelector(".expires-at").textContent = ns.expiresAt ? new Date(ns.expiresAt).toLocaleString() : "unknown";
      li.querySelector(".phase").textContent = ns.phase;
      li.querySelector(".tenant").textContent = ns.tenant;
      const terminating = ns.phase !== "Active";
      for (const control of li.querySelectorAll("form.extend input, form.extend button, button.kubeconfig")) {
        control.disabled = terminating;
      }
      li.querySelector("button.delete").disabled = terminating;
      showKubeconfig(li, ns.name);
    });
    $("empty").hidden = items.length > 0;
    tick();
  }

  function showKubeconfig(li, name) {
    const issued = kubeconfigs.get(name);
    const link = li.querySelector("a.download");
    const details = li.querySelector("details.kubeconfig-text");
    // "Get kubeconfig" until the page holds one, then "Download kubeconfig".
    li.querySelector("button.kubeconfig").hidden = Boolean(issued);
    if (!issued) {
      link.hidden = true;
      details.hidden = true;
      return;
    }
    link.href = issued.url;
    link.download = `${name}.kubeconfig`;
    link.textContent = "Download kubeconfig";
    link.setAttribute("aria-label", `Download the kubeconfig of ${name}`);
    link.hidden = false;
    li.querySelector("textarea").value = issued.kubeconfig;
    details.hidden = false;
  }

  function remember(issued) {
    forgetKubeconfig(issued.name);
    const blob = new Blob([issued.kubeconfig], { type: "application/yaml" });
    kubeconfigs.set(issued.name, {
      kubeconfig: issued.kubeconfig,
      tokenExpiresAt: issued.tokenExpiresAt,
      url: URL.createObjectURL(blob),
    });
  }

  function forgetKubeconfig(name) {
    const old = kubeconfigs.get(name);
    if (old) URL.revokeObjectURL(old.url);
    kubeconfigs.delete(name);
  }

  // ---- actions ------------------------------------------------------------

  async function refresh() {
    const data = await api("GET", API);
    items = (data.items || []).slice().sort((a, b) => a.name.localeCompare(b.name));
    render();
  }

  async function busy(button, work) {
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    clearError();
    try {
      await work();
    } catch (error) {
      handle(error);
    } finally {
      button.removeAttribute("aria-busy");
      button.disabled = false;
      // A card's buttons follow its phase (a deleted namespace cannot be extended).
      render();
    }
  }

  function upsert(issued, phase) {
    const existing = items.find((ns) => ns.name === issued.name);
    if (existing) {
      existing.expiresAt = issued.expiresAt;
    } else {
      items.push({ name: issued.name, tenant: "", phase, expiresAt: issued.expiresAt });
      items.sort((a, b) => a.name.localeCompare(b.name));
    }
  }

  async function createNamespace(event) {
    event.preventDefault();
    const form = event.currentTarget;
    const button = form.querySelector("button");
    const ttl = $("create-ttl").value.trim();
    const parent = $("create-parent").value.trim();
    await busy(button, async () => {
      say("Creating...");
      const body = {};
      if (ttl) body.ttl = ttl;
      if (parent) body.parent = parent;
      const issued = await api("POST", API, body);
      remember(issued);
      upsert(issued, "Active");
      render();
      await refresh().catch(() => {});
      say(`Created ${issued.name}; its kubeconfig is ready to download.`);
      const link = card(issued.name).querySelector("a.download");
      if (!link.hidden) link.focus();
    });
  }

  async function extendNamespace(name, ttl, button) {
    await busy(button, async () => {
      say(`Extending ${name}...`);
      const issued = await api("PATCH", `${API}/${encodeURIComponent(name)}`, ttl ? { ttl } : {});
      remember(issued);
      upsert(issued, "Active");
      render();
      say(`Extended ${name}: it now expires at ${new Date(issued.expiresAt).toLocaleString()}.`);
    });
  }

  // A kubeconfig for a namespace created elsewhere: the API issues one only
  // with a new lifetime, so ask for exactly the whole seconds left (the
  // expiry stays where it is, to the second).
  async function fetchKubeconfig(name, button) {
    if (kubeconfigs.has(name)) {
      const link = card(name).querySelector("a.download");
      link.focus();
      say(`The kubeconfig of ${name} is ready to download.`);
      return;
    }
    const ns = items.find((n) => n.name === name);
    const left = ns && ns.expiresAt ? Math.floor((Date.parse(ns.expiresAt) - Date.now()) / 1000) : 0;
    if (left < 1) {
      showError({ title: "No kubeconfig", detail: `${name} has no time left; extend it first.` });
      return;
    }
    await busy(button, async () => {
      say(`Getting a kubeconfig for ${name}...`);
      const issued = await api("PATCH", `${API}/${encodeURIComponent(name)}`, { ttl: `${left}s` });
      remember(issued);
      upsert(issued, "Active");
      render();
      say(`The kubeconfig of ${name} is ready to download.`);
      card(name).querySelector("a.download").focus();
    });
  }

  // Two presses: the first arms the button for ten seconds.
  async function deleteNamespace(name, button) {
    if (!button.classList.contains("confirm")) {
      button.classList.add("confirm");
      button.textContent = "Press again to delete";
      say(`Press Delete again within 10 seconds to delete ${name}.`);
      setTimeout(() => {
        button.classList.remove("confirm");
        button.textContent = "Delete";
      }, 10000);
      return;
    }
    button.classList.remove("confirm");
    button.textContent = "Delete";
    await busy(button, async () => {
      say(`Deleting ${name}...`);
      const info = await api("DELETE", `${API}/${encodeURIComponent(name)}`);
      forgetKubeconfig(name);
      const ns = items.find((n) => n.name === name);
      if (ns && info) ns.phase = info.phase || "Terminating";
      render();
      say(`Deleting ${name}: it is ${ns ? ns.phase : "Terminating"} and disappears once Kubernetes is done.`);
    });
  }

  // ---- session --------------------------------------------------------------

  async function signIn(candidate, keep) {
    token = candidate;
    clearError();
    say("Signing in...");
    try {
      await refresh();
    } catch (error) {
      token = null;
      sessionStorage.removeItem(STORAGE_KEY);
      handle(error);
      $("token").focus();
      return;
    }
    if (keep) {
      sessionStorage.setItem(STORAGE_KEY, token);
    } else {
      sessionStorage.removeItem(STORAGE_KEY);
    }
    $("token").value = "";
    $("sign-in-section").hidden = true;
    $("app").hidden = false;
    $("sign-out").hidden = false;
    say(`Signed in: ${items.length} namespace${items.length === 1 ? "" : "s"}.`);
    $("create-ttl").focus();
    clearInterval(refreshTimer);
    refreshTimer = setInterval(() => {
      if (token !== null && !document.hidden) refresh().catch(handle);
    }, REFRESH_MS);
  }

  function signOut() {
    token = null;
    sessionStorage.removeItem(STORAGE_KEY);
    clearInterval(refreshTimer);
    for (const name of [...kubeconfigs.keys()]) forgetKubeconfig(name);
    items = [];
    $("namespaces").replaceChildren();
    $("app").hidden = true;
    $("sign-out").hidden = true;
    $("sign-in-section").hidden = false;
    say("Signed out.");
    $("token").focus();
  }

  function start() {
    $("sign-in").addEventListener("submit", (event) => {
      event.preventDefault();
      const value = $("token").value.trim();
      if (!value) {
        showError({ title: "Token needed", detail: "Paste the bearer token you use with the API." });
        $("token").focus();
        return;
      }
      signIn(value, $("remember").checked);
    });
    $("sign-out").addEventListener("click", signOut);
    $("create").addEventListener("submit", createNamespace);
    $("refresh").addEventListener("click", (event) =>
      busy(event.currentTarget, async () => {
        await refresh();
        say(`Refreshed: ${items.length} namespace${items.length === 1 ? "" : "s"}.`);
      }),
    );
    setInterval(tick, 1000);
    const kept = sessionStorage.getItem(STORAGE_KEY);
    if (kept) {
      $("remember").checked = true;
      signIn(kept, true);
    }
  }

  start();
})();
