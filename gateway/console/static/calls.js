// The live calls table: polled about every second, a click selects a call.
import { api, every, Unauthorized } from "./api.js";

const COLUMNS = ["Call", "Carrier", "Route", "State", "Duration", "Speaking", "First audio"];

function cells(call) {
  return [call.id, call.carrier, call.route, call.state, seconds(call.duration_s),
          call.speaking ? "speaking" : "silent",
          call.first_audio_ms == null ? "–" : `${Math.round(call.first_audio_ms)} ms`];
}

function seconds(s) {
  if (s == null) return "–";
  const m = Math.floor(s / 60);
  return `${m}:${String(Math.floor(s % 60)).padStart(2, "0")}`;
}

export function mountCalls(section, { onSelect }) {
  section.innerHTML = `<h2>Calls</h2><table id="calls-table"><thead><tr></tr></thead>
    <tbody></tbody></table><p class="empty">No calls.</p><p class="status" role="status"></p>`;
  const head = section.querySelector("thead tr");
  for (const name of COLUMNS) head.append(Object.assign(document.createElement("th"),
                                                        { textContent: name }));
  const body = section.querySelector("tbody");
  const empty = section.querySelector(".empty");
  const status = section.querySelector(".status");
  let selected = null;

  body.addEventListener("click", (event) => {
    const row = event.target.closest("tr[data-call-id]");
    if (!row) return;
    selected = row.dataset.callId;
    for (const r of body.rows) r.classList.toggle("selected", r.dataset.callId === selected);
    onSelect(selected);
  });

  function render(calls) {
    const rows = new Map([...body.rows].map((r) => [r.dataset.callId, r]));
    for (const call of calls) {
      let row = rows.get(call.id);
      rows.delete(call.id);
      if (!row) {
        row = body.insertRow();
        row.dataset.callId = call.id;
        for (let i = 0; i < COLUMNS.length; i++) row.insertCell();
      }
      row.dataset.state = call.state;
      row.dataset.speaking = call.speaking ? "true" : "false";
      row.classList.toggle("selected", call.id === selected);
      cells(call).forEach((text, i) => { row.cells[i].textContent = text; });
      row.cells[0].title = call.id;
    }
    for (const gone of rows.values()) gone.remove();
    empty.hidden = calls.length > 0;
  }

  return every(1000, async () => {
    try {
      render((await api("/v1/calls")).calls);
      status.textContent = "";
    } catch (error) {
      if (!(error instanceof Unauthorized)) status.textContent = error.message;
    }
  });
}
