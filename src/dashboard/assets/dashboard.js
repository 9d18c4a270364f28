// wagate dashboard: the one script. On a chat page, refreshes the message thread when the
// gateway says the chat changed (Server-Sent Events from `<chat page>/live`: a new message, the
// AI's typing, a reply's progress), or every few seconds where EventSource is missing: a
// same-origin fetch of the page itself, parsed by DOMParser, the thread node swapped, so replies
// appear without a reload and without touching what is being typed. Everything works without it.
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
  if (!window.EventSource) {
    window.setInterval(refresh, 3000);
    return;
  }
  // Changes that come in a burst refresh once; a change seen while the tab was hidden refreshes
  // when it shows again. The browser reconnects the feed by itself.
  var queued = false, missed = false;
  function soon() {
    if (document.visibilityState !== "visible") { missed = true; return; }
    if (queued) return;
    queued = true;
    window.setTimeout(function () { queued = false; refresh(); }, 100);
  }
  document.addEventListener("visibilitychange", function () {
    if (missed && document.visibilityState === "visible") { missed = false; refresh(); }
  });
  var feed = new EventSource(window.location.pathname.replace(/\/$/, "") + "/live");
  feed.addEventListener("changed", soon);
  // What changed between the page's render and the feed's (re)connection is fetched once.
  feed.addEventListener("open", soon);
})();
