// perpcarry dashboard: live refresh of the page's content and the three actions.
// The token is typed by the operator and kept for this tab only (sessionStorage); the
// pages never contain it.
"use strict";

const content = () => document.getElementById("content");

async function refresh() {
  const response = await fetch(location.pathname + "?fragment=1", {cache: "no-store"});
  if (response.ok) content().innerHTML = await response.text();
}

async function act(button) {
  const action = button.dataset.action;
  const body = action === "close" ? {position_id: button.dataset.positionId} : {};
  if (action === "close" && !confirm("Close position " + body.position_id + "?")) return;
  const headers = {"Content-Type": "application/json"};
  const token = document.getElementById("token").value.trim();
  if (token) headers["X-Perpcarry-Token"] = token;
  const result = document.getElementById("action-result");
  result.textContent = action + ": sending...";
  const response = await fetch("/api/" + action, {method: "POST", headers, body: JSON.stringify(body)});
  const answer = await response.json();
  result.className = response.ok ? "ok" : "refused";
  result.textContent = action + (response.ok ? ": done " + JSON.stringify(answer)
                                             : ": refused (" + response.status + "): " + answer.error);
  await refresh();
}

document.addEventListener("DOMContentLoaded", () => {
  const input = document.getElementById("token");
  if (input) {
    input.value = sessionStorage.getItem("perpcarry-token") || "";
    input.addEventListener("change", () => sessionStorage.setItem("perpcarry-token", input.value));
  }
  document.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (button) act(button);
  });
  const seconds = Number(content().dataset.refresh);
  if (seconds > 0) setInterval(refresh, seconds * 1000);
});
