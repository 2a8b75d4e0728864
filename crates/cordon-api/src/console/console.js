// Cordon console: live updates without a reload. Written by hand (no build step, no CDN).
// Pages work without it; with it, forms marked data-live post in the background and the
// page's <main> is refreshed whenever the engine records something (server-sent events).
(function () {
  "use strict";
  var pending = null;

  function swap(html) {
    var doc = new DOMParser().parseFromString(html, "text/html");
    var fresh = doc.querySelector("main");
    var main = document.querySelector("main");
    if (fresh && main) {
      main.innerHTML = fresh.innerHTML;
      main.dataset.refreshed = String(Number(main.dataset.refreshed || "0") + 1);
    }
  }

  // Someone reading a confirmation or typing in a field keeps the page as it is for now.
  function busy() {
    var main = document.querySelector("main");
    var active = document.activeElement;
    return !!main && (!!main.querySelector("details[open]") ||
      (!!active && main.contains(active) && /^(INPUT|SELECT|TEXTAREA)$/.test(active.tagName)));
  }

  function refresh() {
    if (pending) { return; }
    pending = setTimeout(function () {
      pending = null;
      if (busy()) { refresh(); return; }
      fetch(location.href, { credentials: "same-origin", headers: { "X-Cordon-Refresh": "1" } })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) { if (html) { swap(html); } })
        .catch(function () {});
    }, 150);
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.matches("form[data-live]")) { return; }
    event.preventDefault();
    // The confirmation has been given: close it, so that the page may follow what happens.
    var confirmation = form.closest("details");
    if (confirmation) { confirmation.open = false; }
    if (document.activeElement && document.activeElement.blur) { document.activeElement.blur(); }
    fetch(form.action, {
      method: "POST",
      credentials: "same-origin",
      body: new URLSearchParams(new FormData(form)),
    }).then(function (r) {
      return r.text().then(function (html) {
        if (r.ok) { refresh(); } else { swap(html); }
      });
    }).catch(function () { form.submit(); });
  });

  if (window.EventSource && document.body.dataset.live === "1") {
    var source = new EventSource("/events");
    source.addEventListener("change", refresh);
    // Whatever happened between this page's rendering and the stream's (re)connection was not
    // sent on it: catch up once on every open.
    source.addEventListener("open", refresh);
    // Over HTTP/1.1 a browser holds at most six connections to one host: a stream left open
    // by a page being left would starve the next pages' requests.
    window.addEventListener("pagehide", function () { source.close(); });
    window.addEventListener("beforeunload", function () { source.close(); });
  }
})();
