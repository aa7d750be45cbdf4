// G.711 μ-law, table-driven, bit-exact with the ITU reference (and Python's audioop):
// encode looks the 14-bit magnitude up in a 16384-entry table, decode in a 256-entry one.

const BIAS = 0x84;
const CLIP = 8159;

function encode14(value) {
  let mask = 0xff;
  if (value < 0) { value = -value; mask = 0x7f; }
  if (value > CLIP) value = CLIP;
  value += BIAS >> 2;
  let segment = 0;
  while (segment < 8 && value > (0x40 << segment) - 1) segment++;
  if (segment >= 8) return 0x7f ^ mask;
  return ((segment << 4) | ((value >> (segment + 1)) & 0x0f)) ^ mask;
}

function decode(code) {
  const u = ~code & 0xff;
  let t = ((u & 0x0f) << 3) + BIAS;
  t <<= (u & 0x70) >> 4;
  return u & 0x80 ? BIAS - t : t - BIAS;
}

const ENCODE = new Uint8Array(16384);  // index: (sample >> 2) + 8192
for (let i = 0; i < 16384; i++) ENCODE[i] = encode14(i - 8192);
const DECODE = new Int16Array(256);
for (let i = 0; i < 256; i++) DECODE[i] = decode(i);

/** Int16Array of linear samples -> Uint8Array of μ-law codes. */
export function ulawEncode(samples) {
  const out = new Uint8Array(samples.length);
  for (let i = 0; i < samples.length; i++) out[i] = ENCODE[(samples[i] >> 2) + 8192];
  return out;
}

/** Uint8Array of μ-law codes -> Int16Array of linear samples. */
export function ulawDecode(codes) {
  const out = new Int16Array(codes.length);
  for (let i = 0; i < codes.length; i++) out[i] = DECODE[codes[i]];
  return out;
}
