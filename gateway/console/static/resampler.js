// A streaming band-limited resampler: a windowed-sinc (Kaiser) FIR evaluated in polyphase
// form, for any rate ratio (8/16 kHz <-> 44.1/48 kHz). The low-pass cutoff sits below the
// lower of the two Nyquist frequencies, so it is both the anti-imaging filter when going up
// (the gateway's frames to the sound card) and the anti-aliasing filter when going down (the
// microphone to the call). Shared by the two audio worklets.

const PHASES = 512;          // fractional positions tabulated between two input samples
const ZERO_CROSSINGS = 24;   // kernel half-width, in periods of the cutoff
const CUTOFF = 0.9;          // of the lower Nyquist frequency
const KAISER_BETA = 8.6;     // about -90 dB side lobes

function besselI0(x) {
  let sum = 1, term = 1;
  for (let k = 1; k < 50; k++) {
    term *= (x / (2 * k)) ** 2;
    sum += term;
    if (term < sum * 1e-12) break;
  }
  return sum;
}

export class Resampler {
  constructor(inRate, outRate) {
    this.step = inRate / outRate;  // input samples per output sample
    // cutoff as a fraction of the input rate
    const fc = (CUTOFF * Math.min(inRate, outRate) / 2) / inRate;
    this.half = Math.ceil(ZERO_CROSSINGS / (2 * fc));  // input samples each side
    this.taps = 2 * this.half + 1;
    this.table = new Float32Array((PHASES + 1) * this.taps);
    const norm = besselI0(KAISER_BETA);
    for (let p = 0; p <= PHASES; p++) {
      const frac = p / PHASES;
      for (let k = 0; k < this.taps; k++) {
        const x = k - this.half - frac;  // distance from the output position, input samples
        const r = x / (this.half + 1);
        const window = Math.abs(r) >= 1 ? 0 : besselI0(KAISER_BETA * Math.sqrt(1 - r * r)) / norm;
        const arg = 2 * fc * x;
        const sinc = arg === 0 ? 1 : Math.sin(Math.PI * arg) / (Math.PI * arg);
        this.table[p * this.taps + k] = 2 * fc * sinc * window;
      }
    }
    this.reset();
  }

  /** Forget the signal (after a clear): the next input starts from silence. */
  reset() {
    this.buffer = new Float32Array(4096);
    this.length = this.half;  // leading zeros: the first output waits for no history
    this.position = this.half;  // next output's position, in input samples into buffer
  }

  /** Resample one chunk; returns the output samples it completes (a new Float32Array). */
  process(input) {
    this._append(input);
    const last = this.length - this.half - 1;  // last position with its whole kernel in
    const count = Math.max(0, Math.floor((last - this.position) / this.step) + 1);
    const out = new Float32Array(count);
    const { buffer, table, taps, half } = this;
    let t = this.position;
    for (let i = 0; i < count; i++, t += this.step) {
      const base = Math.floor(t);
      const phase = Math.round((t - base) * PHASES);
      const start = base - half, row = phase * taps;
      let acc = 0;
      for (let k = 0; k < taps; k++) acc += buffer[start + k] * table[row + k];
      out[i] = acc;
    }
    this.position = t;
    this._discardBefore(Math.floor(t) - half - 1);
    return out;
  }

  _append(input) {
    if (this.length + input.length > this.buffer.length) {
      const grown = new Float32Array(Math.max(this.buffer.length * 2, this.length + input.length));
      grown.set(this.buffer.subarray(0, this.length));
      this.buffer = grown;
    }
    this.buffer.set(input, this.length);
    this.length += input.length;
  }

  _discardBefore(index) {
    if (index <= 0) return;
    this.buffer.copyWithin(0, index, this.length);
    this.length -= index;
    this.position -= index;
  }
}
