// The page as Twilio Media Streams (docs/protocols/carriers.md §1): JSON text frames,
// connected then start, the caller's μ-law 8 kHz as base64 `media` every 20 ms, `dtmf`,
// marks echoed once played, every pending mark echoed on `clear`, `stop` to hang up.
import { ulawDecode, ulawEncode } from "./g711.js";
import { randomHex } from "./carrier-common.js";

export class TwilioStream {
  static carrier = "twilio";
  static rate = 8000;
  static label = "μ-law 8 kHz (as Twilio)";

  constructor(send) {
    this.send = (message) => send(JSON.stringify(message));
    this.streamSid = "MZ" + randomHex(16);
    this.callSid = "CA" + randomHex(16);
    this.accountSid = "AC" + randomHex(16);
    this.sequence = 0;
    this.chunk = 0;
  }

  get callId() { return this.callSid; }

  _event(event, fields) {
    this.sequence += 1;
    this.send({ event, sequenceNumber: String(this.sequence), streamSid: this.streamSid,
                ...fields });
  }

  open(parameters) {
    this.send({ event: "connected", protocol: "Call", version: "1.0.0" });
    this._event("start", { start: {
      accountSid: this.accountSid, streamSid: this.streamSid, callSid: this.callSid,
      tracks: ["inbound"], customParameters: parameters,
      mediaFormat: { encoding: "audio/x-mulaw", sampleRate: 8000, channels: 1 },
    } });
  }

  audio(samples) {
    this.chunk += 1;
    this._event("media", { media: { track: "inbound", chunk: String(this.chunk),
                                    timestamp: String((this.chunk - 1) * 20),
                                    payload: toBase64(ulawEncode(samples)) } });
  }

  dtmf(digit) { this._event("dtmf", { dtmf: { track: "inbound_track", digit } }); }
  played(name) { this._event("mark", { mark: { name } }); }
  cleared(marks) { for (const name of marks) this.played(name); }  // Twilio echoes them all

  hangup() {
    this._event("stop", { stop: { accountSid: this.accountSid, callSid: this.callSid } });
  }

  /** One message from the gateway -> {kind: audio|mark|clear|invalid, ...}. */
  receive(data) {
    if (typeof data !== "string") return { kind: "invalid", why: "a binary frame (Twilio 31950)" };
    let message;
    try { message = JSON.parse(data); } catch { return { kind: "invalid", why: "not JSON" }; }
    if (message?.streamSid !== this.streamSid) {
      return { kind: "invalid", why: "a wrong or missing streamSid (Twilio 31951)" };
    }
    if (message.event === "media" && typeof message.media?.payload === "string") {
      return { kind: "audio", samples: ulawDecode(fromBase64(message.media.payload)) };
    }
    if (message.event === "mark" && typeof message.mark?.name === "string") {
      return { kind: "mark", name: message.mark.name };
    }
    if (message.event === "clear") return { kind: "clear" };
    return { kind: "invalid", why: `an unknown message (Twilio 31951): ${data.slice(0, 80)}` };
  }
}

function toBase64(bytes) {
  return btoa(String.fromCharCode.apply(null, bytes));
}

function fromBase64(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}
