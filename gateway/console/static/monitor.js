// Calls, events and latency (issue 17): the calls table selects the call whose events the
// timeline shows; the latency plot polls on its own; the token form serves them all.
import { mountCalls } from "./calls.js";
import { mountLatency } from "./latency.js";
import { mountTimeline } from "./timeline.js";
import { mountTokenForm } from "./token.js";

export function mountMonitor({ calls, timeline, latency, tokenForm, onToken = () => {} }) {
  const events = mountTimeline(timeline);
  const table = mountCalls(calls, { onSelect: (id) => events.select(id) });
  const plot = mountLatency(latency);
  mountTokenForm(tokenForm, () => { table.now(); plot.now(); onToken(); });
}
