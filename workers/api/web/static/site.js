// modelyard's page script: confirmations for destructive forms, and live job progress.
// Served from the page's own origin (the Content-Security-Policy allows no inline script).
"use strict";

document.addEventListener("submit", (event) => {
  const message = event.target.dataset.confirm;
  if (message && !window.confirm(message)) event.preventDefault();
});

const RUNNING = new Set(["queued", "running"]);

function show(box, job) {
  const field = (name) => box.querySelector(`[data-field="${name}"]`);
  const status = field("status");
  status.textContent = job.status;
  status.className = `state ${job.status}`;
  field("bar").value = job.percent;
  field("bar").textContent = `${job.percent}%`;
  field("percent").textContent = `${job.percent}%`;
  if (field("failed")) field("failed").textContent = job.items.failed;
  if (field("tokens")) field("tokens").textContent = job.total_tokens.toLocaleString("en");
  if (field("cost")) field("cost").textContent = job.cost === null ? "unknown" : job.cost.toFixed(6);
}

async function follow(box) {
  for (;;) {
    await new Promise((done) => setTimeout(done, 1000));
    let response;
    try {
      response = await fetch(box.dataset.progressUrl, { credentials: "same-origin", cache: "no-store" });
    } catch {
      continue; // the server restarted or the network blinked: ask again
    }
    if (!response.ok) return;
    const job = await response.json();
    show(box, job);
    if (!RUNNING.has(job.status)) {
      if (box.dataset.reload) window.location.reload(); // the page then offers the results and the errors
      return;
    }
  }
}

document.querySelectorAll("[data-progress-url]").forEach(follow);
