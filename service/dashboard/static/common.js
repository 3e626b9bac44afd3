// Shared by the dashboard pages: fetching JSON, signing out, building DOM safely.
// Data from the API is only ever put into the page with textContent, never as HTML.
// With auth on, the browser holds the API token in an HttpOnly session cookie that no
// script can read; requests that change something echo the CSRF cookie in a header.
"use strict";

const AT = (() => {
  function cookie(name) {
    const hit = document.cookie.split("; ").find((c) => c.startsWith(`${name}=`));
    return hit ? decodeURIComponent(hit.slice(name.length + 1)) : "";
  }

  // Headers for a request that changes something (the gate wants the CSRF value).
  function writeHeaders() {
    const headers = { Accept: "application/json" };
    const csrf = cookie("adamp_tune_csrf");
    if (csrf) headers["X-CSRF-Token"] = csrf;
    return headers;
  }

  function show(id, text) {
    const box = document.getElementById(id);
    if (!box) return;
    box.textContent = text || "";
    box.hidden = !text;
  }

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  // Times a GET refused with 429 is sent again after its Retry-After before giving up.
  const RATE_LIMIT_RETRIES = 5;

  async function getJSON(path, params) {
    const url = new URL(path, window.location.origin);
    for (const [k, v] of Object.entries(params || {})) {
      if (Array.isArray(v)) v.forEach((item) => url.searchParams.append(k, item));
      else if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, v);
    }
    const headers = { Accept: "application/json" };
    let answer;
    for (let attempt = 0; ; attempt++) {
      try {
        answer = await fetch(url, { headers, cache: "no-store", credentials: "same-origin" });
      } catch (err) {
        show("error-message", "The service does not answer; retrying…");
        throw new ApiError(0, String(err));
      }
      // Over the service's rate limits: wait as told (Retry-After, seconds), a few times.
      const wait = Number(answer.headers.get("Retry-After"));
      if (answer.status !== 429 || attempt >= RATE_LIMIT_RETRIES || !(wait >= 0) || wait > 60) {
        break;
      }
      show("error-message", `The service is busy; retrying in ${wait} s…`);
      await new Promise((resolve) => window.setTimeout(resolve, wait * 1000));
    }
    if (answer.status === 401) {
      // The session ended (token revoked or expired): the page itself now signs in.
      window.location.reload();
      throw new ApiError(401, "signed out");
    }
    show("auth-message", "");
    if (!answer.ok) {
      let message = `${answer.status} ${answer.statusText}`;
      try {
        message = (await answer.json()).message || message;
      } catch (_) { /* keep the status line */ }
      throw new ApiError(answer.status, message);
    }
    show("error-message", "");
    return answer.json();
  }

  // el("td", {className: "x"}, "text", childNode, ...): children are text or nodes.
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (k === "dataset") Object.assign(node.dataset, v);
      else node[k] = v;
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function fmtNumber(v) {
    if (v === null || v === undefined) return "";
    if (typeof v !== "number") return String(v);
    if (Number.isInteger(v)) return String(v);
    const abs = Math.abs(v);
    return abs !== 0 && (abs < 1e-3 || abs >= 1e5) ? v.toExponential(3) : v.toPrecision(4);
  }

  function fmtDuration(s) {
    if (s === null || s === undefined) return "";
    if (s < 60) return `${s.toFixed(1)} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
    return `${Math.floor(s / 86400)} d ${Math.round((s % 86400) / 3600)} h`;
  }

  function age(iso) {
    if (!iso) return "";
    // The API's datetimes are UTC; some come without an offset.
    const stamp = /[zZ]|[+-]\d\d:?\d\d$/.test(iso) ? iso : `${iso}Z`;
    const s = (Date.now() - Date.parse(stamp)) / 1000;
    return Number.isFinite(s) ? `${fmtDuration(Math.max(0, s))} ago` : "";
  }

  // Run fn now and every periodMs after it settles; pauses while the tab is hidden.
  function poll(fn, periodMs) {
    let timer = null;
    async function tick() {
      timer = null;
      try {
        await fn();
      } catch (err) {
        if (!(err instanceof ApiError)) console.warn(err);
        else if (err.status !== 401 && err.status !== 0) show("error-message", err.message);
      }
      if (timer === null) timer = window.setTimeout(tick, periodMs);
    }
    tick();
    return {
      now() {
        if (timer !== null) window.clearTimeout(timer);
        timer = null;
        tick();
      },
    };
  }

  function setupSession() {
    const button = document.getElementById("sign-out");
    if (!button) return;
    button.addEventListener("click", async () => {
      await fetch("/auth/session", {
        method: "DELETE",
        headers: writeHeaders(),
        credentials: "same-origin",
      });
      window.location.reload();
    });
  }

  setupSession();
  return { getJSON, writeHeaders, el, fmtNumber, fmtDuration, age, poll, show, ApiError };
})();
