// The sign-in page: trade the token for an HttpOnly session cookie, then reload the page
// that asked for it (the dashboard's or optuna-dashboard's).
"use strict";

document.getElementById("sign-in-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const box = document.getElementById("sign-in-error");
  const token = document.getElementById("sign-in-token").value.trim();
  box.hidden = true;
  let answer;
  try {
    answer = await fetch("/auth/session", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ token }),
      credentials: "same-origin",
    });
  } catch (err) {
    box.textContent = `The service does not answer: ${err}`;
    box.hidden = false;
    return;
  }
  if (answer.ok) {
    window.location.reload();
    return;
  }
  let message = `${answer.status} ${answer.statusText}`;
  try {
    message = (await answer.json()).message || message;
  } catch (_) { /* keep the status line */ }
  box.textContent = message;
  box.hidden = false;
});
