// A running run's page in the console: its stdout and stderr as they are written, from
// GET /api/v1/executions/{id}/events (the staff session's cookie signs the request in). When the run ends, the
// page reloads to show the whole record.
(function () {
  "use strict";

  function follow(url, panes) {
    const source = new EventSource(url);
    ["stdout", "stderr"].forEach(function (stream) {
      source.addEventListener(stream, function (event) {
        if (panes[stream]) {
          panes[stream].textContent += JSON.parse(event.data).text;
        }
      });
    });
    source.addEventListener("status", function (event) {
      const banner = document.querySelector(".run-banner");
      if (banner) {
        banner.textContent = JSON.parse(event.data).status;
      }
    });
    source.addEventListener("execution", function () {
      source.close();
      window.location.reload();
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    const panes = {};
    let url = null;
    document.querySelectorAll("[data-live-events]").forEach(function (pane) {
      panes[pane.dataset.liveStream] = pane;
      url = pane.dataset.liveEvents;
    });
    if (url) {
      follow(url, panes);
    }
  });
})();
