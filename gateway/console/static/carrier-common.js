// What the carrier modules share.

/** `bytes` random bytes as lowercase hex (ids like Twilio's MZ… or a Vonage uuid). */
export function randomHex(bytes) {
  const values = crypto.getRandomValues(new Uint8Array(bytes));
  return Array.from(values, (b) => b.toString(16).padStart(2, "0")).join("");
}
