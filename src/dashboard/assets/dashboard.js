// wagate dashboard: the one script. Pages that follow the gateway — a chat's thread, an account's
// chat list, the AI log — refresh their live parts when the gateway says something changed
// (Server-Sent Events from the page's `…/live` feed: a new message, the AI's typing, a reply's
// progress), or every few seconds where EventSource is missing: a same-origin fetch of the page
// itself, parsed by DOMParser, the live nodes swapped, so changes appear without a reload and
// without touching what is being typed. Everything works without it.
(function () {
  "use strict";
  if (!window.fetch || !window.DOMParser) return;
  var here = window.location.pathname.replace(/\/$/, "");
  // Each page: the ids of its live parts (the first one says the page is this one), its feed.
  var pages = [
    { ids: ["thread", "ai-state"], feed: here + "/live" },
    { ids: ["chat-list"], feed: here + "/live" },
    { ids: ["log-rows"], feed: "/logs/live" }
  ];
  var page = null;
  for (var i = 0; i < pages.length; i++) {
    if (document.getElementById(pages[i].ids[0])) { page = pages[i]; break; }
  }
  if (!page) return;
  function refresh() {
    if (document.visibilityState !== "visible") return;
    fetch(window.location.pathname + window.location.search,
      { credentials: "same-origin", redirect: "error" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        page.ids.forEach(function (id) {
          var fresh = doc.getElementById(id), old = document.getElementById(id);
          if (fresh && old) old.replaceWith(document.importNode(fresh, true));
        });
      })
      .catch(function () { /* keep the current view; reloading the page still works */ });
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
  var feed = new EventSource(page.feed);
  feed.addEventListener("changed", soon);
  // What changed between the page's render and the feed's (re)connection is fetched once.
  feed.addEventListener("open", soon);
})();

// A WhatsApp Web account that is pairing: its panel (the QR code changes every ~20 s, then the
// state turns "connected") is fetched again every few seconds until it no longer asks to be.
(function () {
  "use strict";
  if (!window.fetch || !window.DOMParser) return;
  function poll() {
    var panel = document.getElementById("wa-panel");
    if (!panel || !panel.hasAttribute("data-poll")) return;
    var secs = parseInt(panel.getAttribute("data-poll"), 10) || 3;
    window.setTimeout(function () {
      if (document.visibilityState !== "visible") { poll(); return; }
      fetch(window.location.pathname, { credentials: "same-origin", redirect: "error" })
        .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
        .then(function (html) {
          var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("wa-panel");
          var old = document.getElementById("wa-panel");
          if (fresh && old && !old.contains(document.activeElement)) {
            old.replaceWith(document.importNode(fresh, true));
          }
        })
        .catch(function () { /* keep the current view */ })
        .then(poll);
    }, secs * 1000);
  }
  poll();
})();
