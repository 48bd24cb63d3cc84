// Live counters of the flows page: polls the JSON endpoint named by data-url every 5 s and
// updates the figures in place (the list itself is reloaded by the user, not under their eyes).
(function () {
  "use strict";
  var box = document.getElementById("compteurs");
  var note = document.getElementById("maj");
  if (!box || !window.fetch) { return; }
  var url = box.getAttribute("data-url");
  function refresh() {
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (doc) {
        if (!doc) { return; }
        Object.keys(doc.counts).forEach(function (status) {
          var el = box.querySelector('[data-status="' + status + '"]');
          if (el && el.textContent !== String(doc.counts[status])) { el.textContent = String(doc.counts[status]); }
        });
        if (note) {
          note.textContent = "Compteurs mis à jour à " + new Date(doc.at).toLocaleTimeString("fr-FR") + ".";
        }
      })
      .catch(function () { /* next round */ });
  }
  window.setInterval(refresh, 5000);
  refresh();
})();
