// The microphone as the caller's audio: the context's rate (44.1/48 kHz) brought down to the
// call's rate through the resampler's low-pass FIR (cutoff below the call's Nyquist, so
// nothing aliases; no sample is simply dropped), cut into 20 ms frames of 16-bit samples.
import { Resampler } from "./resampler.js";

class Mic extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const rate = options.processorOptions.outputRate;
    this.resampler = new Resampler(sampleRate, rate);
    this.frameSize = rate / 50;
    this.frame = new Int16Array(this.frameSize);
    this.filled = 0;
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (!channel) return true;  // no source connected (yet)
    const samples = this.resampler.process(channel);
    for (let i = 0; i < samples.length; i++) {
      const v = Math.max(-1, Math.min(1, samples[i]));
      this.frame[this.filled++] = Math.round(v * 32767);
      if (this.filled === this.frameSize) {
        this.port.postMessage(this.frame, [this.frame.buffer]);  // detaches this.frame
        this.frame = new Int16Array(this.frameSize);
        this.filled = 0;
      }
    }
    return true;
  }
}

registerProcessor("tts-mic", Mic);
