// The control API as the console uses it: the token is kept for this tab only
// (sessionStorage), sent as a Bearer header on HTTP and as a WebSocket subprotocol on sockets
// (a browser's WebSocket cannot set headers).
const KEY = "tts-gateway.control-token";
const BEARER_PROTOCOL = "tts-gateway.bearer.";
const needTokenListeners = new Set();
let waitingForToken = false;

export function token() { return sessionStorage.getItem(KEY) || ""; }
export function setToken(value) {
  if (value) sessionStorage.setItem(KEY, value); else sessionStorage.removeItem(KEY);
  waitingForToken = false;
}

export class Unauthorized extends Error {}

/** Call ``listener(wrongToken)`` whenever the control API answers 401. */
export function onNeedToken(listener) { needTokenListeners.add(listener); }

function needToken() {
  const wrong = token() !== "";
  waitingForToken = true;
  for (const listener of needTokenListeners) listener(wrong);
  return new Unauthorized(wrong ? "the control token is wrong" : "the control API needs a token");
}

/** fetch() on the control API; throws Unauthorized on 401 (and, without asking the server
 * again, until a token is given), Error with the server's message otherwise. */
export async function api(path, { method = "GET", body } = {}) {
  if (waitingForToken) throw new Unauthorized("waiting for the control token");
  const headers = {};
  if (token()) headers.Authorization = `Bearer ${token()}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401) throw needToken();
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.error?.message || `${method} ${path}: ${response.status}`);
  return data;
}

/** A WebSocket URL on this origin. */
export function socketUrl(path) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${path}`;
}

/** The subprotocols that carry this tab's token to a control socket (none without one):
 * ``tts-gateway.bearer.<base64url(token) without padding>``. */
export function socketProtocols() {
  if (!token()) return [];
  const bytes = new TextEncoder().encode(token());
  const encoded = btoa(String.fromCharCode(...bytes))
    .replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  return [BEARER_PROTOCOL + encoded];
}

/** Run ``poll`` now and then every ``ms`` while the tab is visible (paused while hidden);
 * ``now()`` polls at once (one poll at a time, whoever asks). */
export function every(ms, poll) {
  let timer = null;
  let running = false;
  const tick = async () => {
    clearTimeout(timer);
    timer = null;
    if (document.hidden || running) return;
    running = true;
    try { await poll(); } finally {
      running = false;
      if (!document.hidden && timer === null) timer = setTimeout(tick, ms);
    }
  };
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && timer === null) tick();
  });
  tick();
  return { now: tick };
}
