// The page as Vonage's Voice API WebSocket (docs/protocols/carriers.md §4): a text
// websocket:connected naming audio/l16;rate=16000 (and the NCCO's headers), then binary
// 16-bit little-endian frames of exactly 20 ms (640 bytes) both ways; websocket:dtmf;
// notify echoed as websocket:notify once played; clear answered with websocket:cleared
// (pending notifies dropped, the simulator's default); the leg ends when the socket closes.
import { randomHex } from "./carrier-common.js";

const RATE = 16000;
const FRAME_BYTES = RATE / 50 * 2;
const MAX_PENDING_NOTIFIES = 4096;  // more than Vonage's 3072-frame buffer can hold

export class VonageStream {
  static carrier = "vonage";
  static rate = RATE;
  static label = "L16 16 kHz (as Vonage)";

  constructor(send) {
    this.sendRaw = send;
    this.uuid = [8, 4, 4, 4, 12].map((n) => randomHex(n / 2)).join("-");
    this.payloads = new Map();  // our mark name -> the notify's payload, echoed as it came
    this.nextMark = 0;
  }

  get callId() { return this.uuid; }

  open(parameters) {
    this.sendRaw(JSON.stringify({ event: "websocket:connected",
                                  "content-type": `audio/l16;rate=${RATE}`,
                                  ...parameters, call_uuid: this.uuid }));
  }

  audio(samples) {
    const frame = new DataView(new ArrayBuffer(samples.length * 2));
    for (let i = 0; i < samples.length; i++) frame.setInt16(2 * i, samples[i], true);
    this.sendRaw(frame.buffer);
  }

  dtmf(digit) { this.sendRaw(JSON.stringify({ event: "websocket:dtmf", digit, duration: 250 })); }

  played(name) {
    const payload = this.payloads.get(name);
    this.payloads.delete(name);
    this.sendRaw(JSON.stringify({ event: "websocket:notify", payload }));
  }

  cleared(marks) {
    for (const name of marks) this.payloads.delete(name);
    this.sendRaw(JSON.stringify({ event: "websocket:cleared" }));
  }

  hangup() {}  // closing the socket is Vonage's hang-up

  receive(data) {
    if (typeof data !== "string") {
      if (data.byteLength !== FRAME_BYTES) {
        return { kind: "fatal", why: `unexpected frame size ${data.byteLength}, ` +
                                     `when required ${FRAME_BYTES}` };
      }
      const view = new DataView(data);
      const samples = new Int16Array(data.byteLength / 2);
      for (let i = 0; i < samples.length; i++) samples[i] = view.getInt16(2 * i, true);
      return { kind: "audio", samples };
    }
    let message;
    try { message = JSON.parse(data); } catch { return { kind: "invalid", why: "not JSON" }; }
    if (message?.action === "clear") return { kind: "clear" };
    if (message?.action === "notify" && this.payloads.size < MAX_PENDING_NOTIFIES) {
      const name = String(this.nextMark++);
      this.payloads.set(name, message.payload);
      return { kind: "mark", name };
    }
    return { kind: "invalid", why: `an unknown message: ${data.slice(0, 80)}` };
  }
}
