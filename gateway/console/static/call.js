// Call from this browser (issue 17): to be built.
export function mountCallPanel(section) {
  section.textContent = "Call from this browser: not built yet.";
}
