// The latency plot: /v1/stats/latency polled every 2 s. Each poll's count and sum, less the
// previous poll's, give the mean of that window; the plot shows the last five minutes of
// those means, first audio per provider above and gateway-added per carrier below, with
// each series' p50/p95 (from the histogram's buckets, since the start) in its legend.
import { api, every, Unauthorized } from "./api.js";

const SVG = "http://www.w3.org/2000/svg";
const WINDOW_S = 300;
const WIDTH = 540, PANEL = 150, LEFT = 56, RIGHT = 28, TOP = 22, GAP = 72;
const COLORS = ["#2266cc", "#d9480f", "#2b8a3e", "#862e9c", "#e67700", "#0b7285"];
const PANELS = [
  { key: "first_audio", title: "First audio by provider (text in → first audio byte)" },
  { key: "gateway_added", title: "Gateway-added by carrier (first byte in → first frame out)" },
];

function el(name, attrs = {}, text) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

// The axis' top and how many gridlines: round numbers at every line.
function niceScale(value) {
  if (!(value > 0)) return { max: 1, lines: 4 };
  const step = 10 ** Math.floor(Math.log10(value));
  const [mantissa, lines] = [[1, 4], [2, 4], [2.5, 5], [5, 5], [10, 5]]
    .find(([m]) => m * step >= value);
  return { max: mantissa * step, lines };
}

function ms(value) {
  if (value == null) return "–";
  if (value === 0) return "0";
  return value < 10 ? value.toFixed(2) : value < 100 ? value.toFixed(1) : String(Math.round(value));
}

export function mountLatency(section) {
  section.innerHTML = `<h2>Latency</h2>
    <svg id="latency-plot" role="img" aria-label="Latency over the last five minutes"
         viewBox="0 0 ${WIDTH} ${TOP + 2 * PANEL + GAP + 56}"></svg>
    <p class="status" role="status"></p>`;
  const svg = section.querySelector("#latency-plot");
  const status = section.querySelector(".status");
  const history = new Map();  // "panel:name" -> [{t, mean}]
  const previous = new Map();  // "panel:name" -> {count, sum_ms}
  let latest = {};

  function record(stats) {
    const t = stats.at;
    for (const { key } of PANELS) {
      for (const [name, series] of Object.entries(stats[key] || {})) {
        const id = `${key}:${name}`;
        const before = previous.get(id) || { count: 0, sum_ms: 0 };
        previous.set(id, series);
        const points = history.get(id) || [];
        history.set(id, points);
        const count = series.count - before.count;
        if (count > 0) points.push({ t, mean: (series.sum_ms - before.sum_ms) / count });
        while (points.length && points[0].t < t - WINDOW_S) points.shift();
      }
    }
    latest = stats;
  }

  function drawPanel(panel, top, now) {
    const group = el("g", { class: "panel", "data-panel": panel.key });
    svg.append(group);
    const series = Object.entries(latest[panel.key] || {});
    const plotted = series.map(([name]) => history.get(`${panel.key}:${name}`) || []);
    const { max, lines } = niceScale(Math.max(0, ...plotted.flat().map((p) => p.mean),
                                 ...series.map(([, s]) => s.p95_ms || 0)));
    const x = (t) => LEFT + (WIDTH - LEFT - RIGHT) * (1 - (now - t) / WINDOW_S);
    const y = (v) => top + PANEL - PANEL * Math.min(v, max) / max;
    group.append(el("text", { x: LEFT, y: top - 8, class: "title" }, panel.title));
    for (let i = 0; i <= lines; i++) {
      const v = (max * i) / lines;
      group.append(el("line", { x1: LEFT, x2: WIDTH - RIGHT, y1: y(v), y2: y(v),
                                class: i ? "grid" : "axis" }));
      group.append(el("text", { x: LEFT - 6, y: y(v) + 4, class: "tick", "text-anchor": "end" },
                      `${ms(v)} ms`));
    }
    for (let m = 0; m <= 5; m++) {
      group.append(el("text", { x: x(now - m * 60), y: top + PANEL + 14, class: "tick",
                                "text-anchor": "middle" }, m ? `−${m} min` : "now"));
    }
    group.append(el("line", { x1: LEFT, x2: LEFT, y1: top, y2: top + PANEL, class: "axis" }));
    if (!series.length) {
      group.append(el("text", { x: LEFT + 12, y: top + PANEL / 2, class: "none" },
                      "no samples yet"));
    }
    series.forEach(([name, s], i) => {
      const color = COLORS[i % COLORS.length];
      const points = plotted[i];
      if (points.length > 1) {
        group.append(el("polyline", {
          points: points.map((p) => `${x(p.t).toFixed(1)},${y(p.mean).toFixed(1)}`).join(" "),
          stroke: color, fill: "none", "stroke-width": 1.5 }));
      }
      for (const p of points) {
        group.append(el("circle", { cx: x(p.t), cy: y(p.mean), r: 3, fill: color }));
      }
      const mean = s.count ? s.sum_ms / s.count : null;
      const legend = el("text", {
        x: LEFT + 8 + (i % 2) * 230, y: top + PANEL + 30 + Math.floor(i / 2) * 14,
        fill: color, class: "legend", "data-series": `${panel.key}:${name}`,
        "data-count": s.count, "data-mean-ms": mean == null ? "" : mean.toFixed(1),
        "data-p50-ms": s.p50_ms ?? "", "data-p95-ms": s.p95_ms ?? "",
      }, `${name}: mean ${ms(mean)} · p50 ${ms(s.p50_ms)} · p95 ${ms(s.p95_ms)} ms (${s.count})`);
      group.append(legend);
    });
  }

  function draw() {
    svg.replaceChildren();
    const now = latest.at || Date.now() / 1000;
    PANELS.forEach((panel, i) => drawPanel(panel, TOP + i * (PANEL + GAP), now));
  }

  return every(2000, async () => {
    try {
      record(await api("/v1/stats/latency"));
      status.textContent = "";
      draw();
    } catch (error) {
      if (!(error instanceof Unauthorized)) status.textContent = error.message;
    }
  });
}
