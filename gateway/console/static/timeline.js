// The selected call: its events from the control socket as a timeline (the last 500), and
// speak, interrupt and hang-up through the control API.
import { api, socketProtocols, socketUrl } from "./api.js";

const MAX_EVENTS = 500;
// the fields worth a glance, per event; the rest is in the item's tooltip
const KEY_FIELDS = ["source", "speech_id", "latency_ms", "interrupted", "cause", "error",
                    "from_provider", "to_provider", "reason", "digit", "name", "outcome",
                    "state", "route", "carrier", "kind", "message"];

function describe(event) {
  return KEY_FIELDS.filter((key) => event[key] !== undefined && event[key] !== null)
    .map((key) => `${key}=${typeof event[key] === "object" ? JSON.stringify(event[key])
                                                            : event[key]}`)
    .join(" ");
}

export function mountTimeline(section) {
  section.innerHTML = `<h2>Events <span class="call-id"></span></h2>
    <form id="call-controls" class="controls" hidden>
      <input id="speak-text" placeholder="Text to speak" maxlength="20000" required>
      <input id="speak-voice" placeholder="voice (optional)" maxlength="200">
      <input id="speak-provider" placeholder="provider (optional)" maxlength="200"
             list="provider-names">
      <datalist id="provider-names"></datalist>
      <button id="speak-button" type="submit">Speak</button>
      <button id="interrupt-button" type="button">Interrupt</button>
      <button id="hangup-button" type="button">Hang up</button>
      <span class="status" role="status"></span>
    </form>
    <p class="empty">Select a call to see its events.</p>
    <ol id="timeline"></ol>`;
  const list = section.querySelector("#timeline");
  const form = section.querySelector("#call-controls");
  const status = form.querySelector(".status");
  const empty = section.querySelector(".empty");
  let callId = null;
  let socket = null;
  let origin = null;

  let providersListed = false;
  function listProviders() {  // the routes' providers, as suggestions for speak
    if (providersListed) return;
    api("/v1/routes").then(({ routes }) => {
      const names = new Set(routes.flatMap((r) => [r.provider, ...r.fallback]));
      const datalist = section.querySelector("#provider-names");
      datalist.replaceChildren(...[...names].map((name) => new Option(name)));
      providersListed = true;
    }).catch(() => {});
  }

  function add(event) {
    origin ??= event.ts;
    const item = document.createElement("li");
    item.dataset.type = event.type;
    item.title = JSON.stringify(event);
    const offset = event.ts == null ? "" : `+${(event.ts - origin).toFixed(2)} s`;
    for (const [cls, text] of [["offset", offset], ["type", event.type],
                               ["fields", describe(event)]]) {
      item.append(Object.assign(document.createElement("span"), { className: cls,
                                                                 textContent: text }));
    }
    list.append(item);
    while (list.childElementCount > MAX_EVENTS) list.firstElementChild.remove();
    item.scrollIntoView({ block: "nearest" });
  }

  async function act(path, body) {
    status.textContent = "";
    try {
      const answer = await api(`/v1/calls/${encodeURIComponent(callId)}/${path}`,
                               { method: "POST", body });
      status.textContent = path === "speak" ? `queued ${answer.speech_id}` : `${path}: done`;
    } catch (error) {
      status.textContent = error.message;
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const body = { text: form.querySelector("#speak-text").value };
    const voice = form.querySelector("#speak-voice").value.trim();
    const provider = form.querySelector("#speak-provider").value.trim();
    if (voice) body.voice = voice;
    if (provider) body.provider = provider;
    act("speak", body);
  });
  form.querySelector("#interrupt-button").addEventListener("click", () => act("interrupt"));
  form.querySelector("#hangup-button").addEventListener("click", () => act("hangup"));

  function select(id) {
    if (socket) socket.close();
    callId = id;
    origin = null;
    list.replaceChildren();
    section.querySelector(".call-id").textContent = id;
    form.hidden = false;
    empty.hidden = true;
    listProviders();
    const ws = new WebSocket(socketUrl(`/v1/calls/${encodeURIComponent(id)}/control`),
                             socketProtocols());
    socket = ws;
    ws.addEventListener("message", (message) => {
      if (typeof message.data !== "string") return;
      try { add(JSON.parse(message.data)); } catch { /* not an event */ }
    });
    ws.addEventListener("close", () => {
      if (socket === ws) add({ type: "socket.closed", ts: null });
    });
  }
  return { select };
}
