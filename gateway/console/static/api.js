// The control API as the console uses it: the token is kept for this tab only
// (sessionStorage), sent as a Bearer header on HTTP and as a WebSocket subprotocol on sockets
// (a browser's WebSocket cannot set headers).
const KEY = "tts-gateway.control-token";

export function token() { return sessionStorage.getItem(KEY) || ""; }
export function setToken(value) {
  if (value) sessionStorage.setItem(KEY, value); else sessionStorage.removeItem(KEY);
}

export class Unauthorized extends Error {}

/** fetch() on the control API; throws Unauthorized on 401, Error with the message otherwise. */
export async function api(path, { method = "GET", body } = {}) {
  const headers = {};
  if (token()) headers.Authorization = `Bearer ${token()}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401) throw new Unauthorized("the control API needs a token");
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.error?.message || `${method} ${path}: ${response.status}`);
  return data;
}

/** A WebSocket URL on this origin. */
export function socketUrl(path) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${path}`;
}
