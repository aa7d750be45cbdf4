// The token form: shown when the control API answers 401; the token is kept for this tab.
import { onNeedToken, setToken } from "./api.js";

export function mountTokenForm(form, onToken) {
  const input = form.querySelector("#token");
  const error = form.querySelector("#token-error");
  onNeedToken((wrong) => {
    form.hidden = false;
    error.textContent = wrong ? "That token was refused: check it and try again."
                              : "The control API needs its token.";
    input.focus();
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    setToken(input.value.trim());
    input.value = "";
    form.hidden = true;
    error.textContent = "";
    onToken();
  });
}
