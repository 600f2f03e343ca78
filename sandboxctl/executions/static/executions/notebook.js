"use strict";
// A session's notebook, live: while the session lives or one of its cells still runs, ask every few seconds for
// the cells after those the page holds finished, and put each in place by its number (a running cell is
// replaced when it ends; a new one is added at the end). No reload, and nothing asked once all is over.
(() => {
  const notebook = document.getElementById("notebook");
  if (!notebook) return;
  const POLL_MS = 2000;
  const RETRY_MS = 10000;
  const $ = (id) => document.getElementById(id);

  function cells() { return [...notebook.querySelectorAll(".run-cell")]; }

  // How many leading cells have finished: they cannot change, so they are never asked for again.
  function settled() {
    let count = 0;
    for (const cell of cells()) {
      if (cell.dataset.terminal !== "true") break;
      count = Number(cell.dataset.cell);
    }
    return count;
  }

  function unfinished() { return cells().some((cell) => cell.dataset.terminal !== "true"); }

  function place({ number, html }) {
    const template = document.createElement("template");
    template.innerHTML = html.trim(); // drawn by the server's cell template, which escapes what the run wrote
    const cell = template.content.firstElementChild;
    const existing = $(`cell-${number}`);
    if (existing) {
      existing.replaceWith(cell);
      return false;
    }
    notebook.querySelector(".notebook-empty")?.remove();
    notebook.appendChild(cell);
    return true;
  }

  function show(data, added) {
    $("session-status").textContent = data.status;
    $("session-status").className = `run-status session-${data.status}`;
    $("session-detail").textContent = data.detail;
    $("cell-count").textContent = String(cells().length);
    const status = $("notebook-status");
    if (added.length) status.textContent = `New: ${added.map((number) => `cell ${number}`).join(", ")}.`;
    else if (!data.live) status.textContent = `The session has ${data.status}; no more cells will come.`;
  }

  async function poll() {
    let data;
    try {
      const response = await fetch(`${notebook.dataset.cellsUrl}?after=${settled()}`, {
        credentials: "same-origin", headers: { Accept: "application/json" },
      });
      if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
      data = await response.json();
    } catch (error) {
      $("notebook-status").textContent = `Could not refresh the cells (${error.message}); trying again.`;
      setTimeout(poll, RETRY_MS);
      return;
    }
    const added = data.cells.filter(place).map((cell) => cell.number);
    notebook.dataset.live = String(data.live);
    show(data, added);
    if (data.live || unfinished()) setTimeout(poll, POLL_MS);
  }

  if (notebook.dataset.live === "true" || unfinished()) setTimeout(poll, POLL_MS);
})();
