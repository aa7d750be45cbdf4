// Call from this browser (issue 17): pick a route and a carrier format, press Call, hear
// the route, talk back through the microphone, press keys. The page is the carrier
// (browser-call.js); this module is the panel and its test hooks (window.ttsConsole).
import { BrowserCall } from "./browser-call.js";
import { TwilioStream } from "./carrier-twilio.js";
import { VonageStream } from "./carrier-vonage.js";

const FORMATS = [TwilioStream, VonageStream];
const KEYS = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "*", "0", "#"];
const MAX_ROUTE_CHARS = 100;

let current = null;
let routeList = null;
let routesWithToken = new Set();  // routes whose media path needs their token
let renderPanel = () => {};

function element(tag, attributes = {}, children = []) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

export function mountCallPanel(section) {
  document.head.append(element("link", { rel: "stylesheet", href: "/console/call.css" }));
  routeList = element("datalist", { id: "call-routes" }, [element("option", { value: "demo" })]);
  const route = element("input", { id: "call-route", value: "demo", list: "call-routes",
                                   maxlength: String(MAX_ROUTE_CHARS), required: "",
                                   autocomplete: "off", spellcheck: "false" });
  const routeToken = element("input", { id: "call-route-token", type: "password",
                                        autocomplete: "off", maxlength: "200" });
  const tokenLabel = element("label", { hidden: "" }, ["Route token ", routeToken]);
  const format = element("select", { id: "call-format" }, FORMATS.map(
    (Stream) => element("option", { value: Stream.carrier, text: Stream.label })));
  const microphone = element("input", { id: "call-mic", type: "checkbox" });
  microphone.checked = true;
  const start = element("button", { id: "call-start", type: "submit", text: "Call" });
  const hangup = element("button", { id: "call-hangup", type: "button", text: "Hang up" });
  const keypad = element("div", { id: "keypad", role: "group", "aria-label": "Keypad" },
    KEYS.map((digit) => element("button", { type: "button", "data-digit": digit,
                                            text: digit })));
  const status = element("p", { id: "call-status", role: "status", text: "Idle" });
  const form = element("form", { class: "call-form" }, [
    element("h2", { text: "Call from this browser" }),
    element("label", {}, ["Route ", route]), routeList, tokenLabel,
    element("label", {}, ["Format ", format]),
    element("label", {}, [microphone, " Microphone"]),
    element("div", { class: "call-buttons" }, [start, hangup]),
    keypad, status,
  ]);
  section.replaceChildren(form);

  const render = () => {
    const live = current && current.state !== "ended";
    start.disabled = Boolean(live);
    hangup.disabled = !live;
    tokenLabel.hidden = !routesWithToken.has(route.value.trim());
    route.disabled = routeToken.disabled = format.disabled = microphone.disabled = Boolean(live);
    for (const key of keypad.querySelectorAll("button")) key.disabled = current?.state !== "in call";
    status.textContent = describe(current);
  };

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (current && current.state !== "ended") return;
    const Stream = FORMATS.find((s) => s.carrier === format.value) || FORMATS[0];
    const call = new BrowserCall({ Stream, route: route.value.trim(),
                                   routeToken: tokenLabel.hidden ? "" : routeToken.value,
                                   microphone: microphone.checked, onChange: render });
    current = call;
    render();
    try {
      await call.start();
    } catch (error) {
      if (call.state !== "ended") call.hangUp(`could not start: ${error.message}`);
    }
  });
  route.addEventListener("input", render);
  renderPanel = render;
  hangup.addEventListener("click", () => current?.hangUp());
  keypad.addEventListener("click", (event) => {
    const digit = event.target.closest("button")?.dataset.digit;
    if (digit) current?.sendDtmf(digit);
  });
  render();
  installTestHooks();
}

/** Offer the routes of GET /v1/routes in the picker: `routes` as it lists them. */
export function offerRoutes(routes, defaultRoute) {
  routeList?.replaceChildren(...routes.map(({ name }) => element("option", { value: name })));
  routesWithToken = new Set(routes.filter((r) => r.token).map((r) => r.name));
  const input = document.getElementById("call-route");
  if (input && defaultRoute && !routes.some((r) => r.name === input.value)) input.value = defaultRoute;
  renderPanel();
}

function describe(call) {
  if (!call) return "Idle";
  const what = `${call.Stream.label}, route ${call.route}`;
  if (call.state === "connecting") return `Connecting (${what})…`;
  if (call.state === "in call") {
    const mic = call.micProblem ? `, no microphone (${call.micProblem})`
      : call.wantMicrophone ? "" : ", microphone off";
    return `In call (${what}${mic}), call id ${call.callId}`;
  }
  return `Call ended: ${call.ending}`;
}

function installTestHooks() {
  window.ttsConsole = Object.assign(window.ttsConsole || {}, {
    /** The current (or last) browser call: state, ids, counters. */
    call() {
      if (!current) return null;
      return { state: current.state, callId: current.callId || null, route: current.route,
               carrier: current.Stream.carrier, ending: current.ending,
               micProblem: current.micProblem || null, ...current.stats };
    },
    /** What the page played (16-bit PCM at `rate`, base64) and the player's counters. */
    async captured() {
      const capture = current && await current.captured();
      if (!capture) return null;
      const { samples, ...rest } = capture;
      return { ...rest, pcm: toBase64(new Uint8Array(samples.buffer, samples.byteOffset,
                                                     samples.byteLength)) };
    },
    async playerStats() { return current ? current.playerStats() : null; },
  });
}

function toBase64(bytes) {
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(text);
}
