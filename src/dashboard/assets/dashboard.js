// wagate dashboard: the one script. On a chat page, refreshes the message thread every few
// seconds (same-origin fetch of the page itself, parsed by DOMParser, the thread node swapped),
// so AI replies appear without a reload and without touching what is being typed. Everything
// works without it.
(function () {
  "use strict";
  var thread = document.getElementById("thread");
  if (!thread || !window.fetch || !window.DOMParser) return;
  function refresh() {
    if (document.visibilityState !== "visible") return;
    fetch(window.location.pathname, { credentials: "same-origin", redirect: "error" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        ["thread", "ai-state"].forEach(function (id) {
          var fresh = doc.getElementById(id), old = document.getElementById(id);
          if (fresh && old) old.replaceWith(document.importNode(fresh, true));
        });
      })
      .catch(function () { /* keep the current view; the Refresh link still works */ });
  }
  window.setInterval(refresh, 3000);
})();
