// One call from this browser: the page dials /v1/media/<carrier>/<route> the way that
// carrier does (the protocol lives in carrier-<name>.js), plays what the gateway sends
// through the player worklet, echoes marks once their audio has played, and sends the
// microphone through the mic worklet as the caller's audio.
import { socketUrl } from "./api.js";

// The caller's audio waiting in the socket beyond this is dropped (and counted) rather
// than queued: a stalled socket must not grow the page's memory or the call's delay.
const MAX_BUFFERED_BYTES = 64 * 1024;
const WARNINGS_SHOWN = 5;  // per call, on the browser's console (then only counted)

export class BrowserCall {
  /** `Stream`: a carrier class (TwilioStream, VonageStream); `onChange(call)` on news. */
  constructor({ Stream, route, routeToken = "", microphone, onChange }) {
    this.Stream = Stream;
    this.route = route;
    this.routeToken = routeToken;  // the route's media token, where it has one
    this.wantMicrophone = microphone;
    this.onChange = onChange;
    this.state = "connecting";
    this.ending = "";
    this.stats = { framesReceived: 0, micFramesSent: 0, micFramesDropped: 0,
                   marksEchoed: 0, clears: 0, dtmfSent: 0, invalidMessages: 0 };
    this.lastCapture = null;
  }

  get callId() { return this.stream?.callId; }

  async start() {
    this.context = new AudioContext({ latencyHint: "interactive" });
    await this.context.audioWorklet.addModule("/console/player-worklet.js");
    await this.context.audioWorklet.addModule("/console/mic-worklet.js");
    this.player = new AudioWorkletNode(this.context, "tts-player", {
      numberOfInputs: 0, outputChannelCount: [1],
      processorOptions: { inputRate: this.Stream.rate } });
    this.player.connect(this.context.destination);
    this.replies = new Map();  // type -> resolvers of worklet requests waiting for it
    this.player.port.onmessage = (event) => this._fromPlayer(event.data);
    if (this.wantMicrophone) await this._openMicrophone();
    if (this.state !== "connecting") return;  // hung up meanwhile
    const tokenPart = this.routeToken ? `/${encodeURIComponent(this.routeToken)}` : "";
    const path = `/v1/media/${this.Stream.carrier}/${encodeURIComponent(this.route)}${tokenPart}`;
    this.socket = new WebSocket(socketUrl(path));
    this.socket.binaryType = "arraybuffer";
    this.stream = new this.Stream((data) => this.socket.send(data));
    this.socket.onopen = () => {
      this.stream.open({ route: this.route, source: "browser-console" });
      this._set("in call");
    };
    this.socket.onmessage = (event) => this._fromGateway(event.data);
    this.socket.onclose = (event) => {
      const why = this.state === "connecting"
        ? `could not connect (${event.code || "refused"})`
        : `ended by the gateway (${event.code}${event.reason ? ": " + event.reason : ""})`;
      this._end(why);
    };
  }

  async _openMicrophone() {
    try {
      this.media = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: true, noiseSuppression: false,
                 autoGainControl: false } });
    } catch (error) {
      console.warn(`call: no microphone, listening only (${error.name})`);
      this.micProblem = error.name;
      return;
    }
    this.mic = new AudioWorkletNode(this.context, "tts-mic", {
      numberOfOutputs: 0, channelCount: 1, channelCountMode: "explicit",
      processorOptions: { outputRate: this.Stream.rate } });
    this.context.createMediaStreamSource(this.media).connect(this.mic);
    this.mic.port.onmessage = (event) => this._sendCallerAudio(event.data);
  }

  _sendCallerAudio(frame) {
    if (this.state !== "in call") return;
    if (this.socket.bufferedAmount > MAX_BUFFERED_BYTES) {
      this.stats.micFramesDropped += 1;
      return;
    }
    this.stream.audio(frame);
    this.stats.micFramesSent += 1;
  }

  _fromGateway(data) {
    if (this.state !== "in call") return;
    const message = this.stream.receive(data);
    switch (message.kind) {
      case "audio":
        this.stats.framesReceived += 1;
        this._toPlayer({ type: "audio", samples: toFloat(message.samples) });
        break;
      case "mark": this._toPlayer({ type: "mark", name: message.name }); break;
      case "clear": this.stats.clears += 1; this._toPlayer({ type: "clear" }); break;
      case "fatal": this._warn(message.why); this.hangUp(`the gateway sent ${message.why}`); break;
      default: this._warn(message.why);
    }
  }

  _warn(why) {
    this.stats.invalidMessages += 1;
    if (this.stats.invalidMessages <= WARNINGS_SHOWN) console.warn(`call: the gateway sent ${why}`);
  }

  _toPlayer(message) {
    const transfer = message.samples ? [message.samples.buffer] : [];
    this.player.port.postMessage(message, transfer);
  }

  _fromPlayer(message) {
    if (message.type === "played" && this.state === "in call") {
      this.stream.played(message.name);
      this.stats.marksEchoed += 1;
    } else if (message.type === "cleared" && this.state === "in call") {
      this.stream.cleared(message.marks);
    } else {
      const waiting = this.replies.get(message.type) || [];
      this.replies.delete(message.type);
      for (const resolve of waiting) resolve(message);
    }
  }

  /** Ask the player worklet (`stats` or `captured`); null if it does not answer in 2 s. */
  _ask(type) {
    if (!this.player || this.context.state === "closed") return Promise.resolve(null);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(null), 2000);
      const waiting = this.replies.get(type) || [];
      waiting.push((message) => { clearTimeout(timer); resolve(message); });
      this.replies.set(type, waiting);
      this.player.port.postMessage({ type });
    });
  }

  async playerStats() { return (await this._ask("stats")) || this.lastCapture; }
  async captured() { return (await this._ask("captured")) || this.lastCapture; }

  sendDtmf(digit) {
    if (this.state !== "in call") return;
    this.stream.dtmf(digit);
    this.stats.dtmfSent += 1;
  }

  /** Hang up as the carrier does: its stop message (if any), then close the socket. */
  hangUp(why = "you hung up") {
    if (this.state === "in call") {
      this.stream.hangup();
      this.socket.close(1000, "hang up");  // a page may send 1000 or 3000-4999 only
    } else if (this.socket && this.state === "connecting") {
      this.socket.close();
    }
    this._end(why);
  }

  async _end(why) {
    if (this.state === "ended") return;
    this.state = "ended";
    this.ending = why;
    this.media?.getTracks().forEach((track) => track.stop());
    this.onChange(this);
    this.lastCapture = await this._ask("captured");
    await this.context?.close().catch(() => {});
  }

  _set(state) {
    this.state = state;
    this.onChange(this);
  }
}

function toFloat(samples) {
  const out = new Float32Array(samples.length);
  for (let i = 0; i < samples.length; i++) out[i] = samples[i] / 32768;
  return out;
}
