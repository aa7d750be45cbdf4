// The console's entry: each panel is its own module, mounted on its section.
import { mountCallPanel } from "./call.js";
import { mountMonitor } from "./monitor.js";

mountCallPanel(document.getElementById("call-panel"));
mountMonitor({
  calls: document.getElementById("calls-panel"),
  timeline: document.getElementById("timeline-panel"),
  latency: document.getElementById("latency-panel"),
  tokenForm: document.getElementById("token-form"),
});
