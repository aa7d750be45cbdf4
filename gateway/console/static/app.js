// The console's entry: each panel is its own module, mounted on its section.
import { api } from "./api.js";
import { mountCallPanel, offerRoutes } from "./call.js";
import { mountMonitor } from "./monitor.js";

async function loadRoutes() {
  try {
    const { routes, default_route: defaultRoute } = await api("/v1/routes");
    offerRoutes(routes, defaultRoute);
  } catch {
    // no token yet (the token form asks for it, then this runs again) or the API is away:
    // the picker keeps what it has, and any route name can still be typed
  }
}

mountCallPanel(document.getElementById("call-panel"));
mountMonitor({
  calls: document.getElementById("calls-panel"),
  timeline: document.getElementById("timeline-panel"),
  latency: document.getElementById("latency-panel"),
  tokenForm: document.getElementById("token-form"),
  onToken: loadRoutes,
});
loadRoutes();
