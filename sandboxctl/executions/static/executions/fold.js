"use strict";
// A long stdout or stderr arrives folded: the page carries its first lines only, and the whole is fetched the
// first time someone opens "show all" (a run may print megabytes nobody asked to see). Listens on the
// document, so cells a notebook adds later fold the same way.
(() => {
  async function unfold(fold) {
    const whole = fold.querySelector(".run-whole");
    fold.dataset.loading = "true";
    whole.setAttribute("aria-busy", "true");
    try {
      const response = await fetch(fold.dataset.src, { credentials: "same-origin" });
      if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
      whole.textContent = await response.text();
      fold.dataset.loaded = "true";
    } catch (error) {
      whole.textContent = `Could not load the whole output (${error.message}); use the download link.`;
    } finally {
      delete fold.dataset.loading;
      whole.removeAttribute("aria-busy");
    }
  }

  document.addEventListener("toggle", (event) => {
    const fold = event.target;
    if (!(fold instanceof HTMLDetailsElement) || !fold.classList.contains("run-fold")) return;
    // The whole replaces the first lines while it is open, rather than repeating them.
    const head = fold.parentElement.querySelector(".run-head");
    if (head) head.hidden = fold.open;
    if (fold.open && !fold.dataset.loaded && !fold.dataset.loading) unfold(fold);
  }, true); // toggle does not bubble
})();
