// Playback of the gateway's audio: frames at the call's rate are resampled to the context's
// rate as they arrive and queued in a small jitter buffer that starts playing once
// PREBUFFER_S is queued (or a mark waits behind less). A mark is reported back when the
// audio queued before it has been played out; a clear empties the queue and hands back the
// marks it cut. What was played is kept (at most CAPTURE_S) for the console's tests.
import { Resampler } from "./resampler.js";

const PREBUFFER_S = 0.06;
const MAX_QUEUE_S = 20;   // the gateway paces with a lead of ~0.1 s; beyond this we drop
const CAPTURE_S = 120;

class Player extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.resampler = new Resampler(options.processorOptions.inputRate, sampleRate);
    this.queue = new Float32Array(Math.ceil(MAX_QUEUE_S * sampleRate));
    this.head = 0;            // ring read index
    this.queued = 0;          // samples in the ring
    this.written = 0;         // samples ever queued (the marks' positions are in this count)
    this.played = 0;          // samples ever played from the queue
    this.marks = [];          // {name, at}: at = `written` when the mark arrived
    this.playing = false;
    this.lastMarkAt = -1;     // where the last mark played: running dry there is no underrun
    this.underruns = 0;
    this.dropped = 0;
    this.capture = new Int16Array(Math.ceil(CAPTURE_S * sampleRate));
    this.captured = 0;
    this.port.onmessage = (event) => this.command(event.data);
  }

  command(message) {
    if (message.type === "audio") this.enqueue(this.resampler.process(message.samples));
    else if (message.type === "mark") this.marks.push({ name: message.name, at: this.written });
    else if (message.type === "clear") this.clear();
    else if (message.type === "stats") this.port.postMessage({ type: "stats", ...this.stats() });
    else if (message.type === "captured") {
      const samples = this.capture.slice(0, this.captured);
      this.port.postMessage({ type: "captured", rate: sampleRate, samples, ...this.stats() },
                            [samples.buffer]);
    }
  }

  stats() {
    return { playedSeconds: this.played / sampleRate, underruns: this.underruns,
             droppedSeconds: this.dropped / sampleRate, queuedSeconds: this.queued / sampleRate,
             pendingMarks: this.marks.length };
  }

  enqueue(samples) {
    const room = this.queue.length - this.queued;
    if (samples.length > room) {
      this.dropped += samples.length - room;
      samples = samples.subarray(0, room);
    }
    const size = this.queue.length;
    let tail = (this.head + this.queued) % size;
    for (let i = 0; i < samples.length; i++) {
      this.queue[tail] = samples[i];
      if (++tail === size) tail = 0;
    }
    this.queued += samples.length;
    this.written += samples.length;
  }

  clear() {
    this.head = (this.head + this.queued) % this.queue.length;
    this.queued = 0;
    this.played = this.written;  // skipped over: marks are positions in the written count
    this.resampler.reset();
    const cut = this.marks.map((mark) => mark.name);
    this.marks = [];
    this.playing = false;
    this.port.postMessage({ type: "cleared", marks: cut });
  }

  process(inputs, outputs) {
    const out = outputs[0][0];
    if (!this.playing) {
      const markWaiting = this.marks.length > 0 && this.queued > 0;
      this.playing = this.queued >= PREBUFFER_S * sampleRate || markWaiting;
    }
    let n = 0;
    if (this.playing) {
      const size = this.queue.length;
      n = Math.min(out.length, this.queued);
      for (let i = 0; i < n; i++) {
        out[i] = this.queue[this.head];
        if (++this.head === size) this.head = 0;
      }
      this.queued -= n;
      this.played += n;
      this.keep(out, n);
    }
    out.fill(0, n);
    for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);
    this.reportMarks();
    if (this.playing && this.queued === 0) {
      // dry: an underrun unless what ran out was a whole utterance (a mark closed it)
      this.playing = false;
      if (this.lastMarkAt !== this.played) this.underruns++;
    }
    return true;
  }

  reportMarks() {
    while (this.marks.length && this.marks[0].at <= this.played) {
      const mark = this.marks.shift();
      this.lastMarkAt = mark.at;
      this.port.postMessage({ type: "played", name: mark.name });
    }
  }

  keep(out, n) {
    const room = Math.min(n, this.capture.length - this.captured);
    for (let i = 0; i < room; i++) {
      const v = Math.max(-1, Math.min(1, out[i]));
      this.capture[this.captured++] = Math.round(v * 32767);
    }
  }
}

registerProcessor("tts-player", Player);
