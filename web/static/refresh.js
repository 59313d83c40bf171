// Refresh the page's <main> every 5 s without reloading (no flash, scroll kept).
// Skipped while the tab is hidden or text is selected; a failed fetch shows the "connection lost" note.
(function () {
  "use strict";
  var busy = false;
  function stale(on) {
    var el = document.getElementById("stale");
    if (el) { el.hidden = !on; }
  }
  setInterval(function () {
    if (busy || document.hidden) { return; }
    var sel = window.getSelection && window.getSelection();
    if (sel && String(sel).length) { return; }
    busy = true;
    fetch(location.href, { cache: "no-store", credentials: "same-origin" })
      .then(function (r) { return r.text(); })
      .then(function (text) {
        var doc = new DOMParser().parseFromString(text, "text/html");
        var fresh = doc.getElementById("main");
        var current = document.getElementById("main");
        if (fresh && current) { current.replaceWith(document.adoptNode(fresh)); }
        stale(false);
      })
      .catch(function () { stale(true); })
      .finally(function () { busy = false; });
  }, 5000);
})();
