// Calls, events and latency (issue 17): to be built.
export function mountMonitor({ calls }) {
  calls.textContent = "Calls: not built yet.";
}
