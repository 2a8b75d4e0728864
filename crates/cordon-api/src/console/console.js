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

  function refresh() {
    if (pending) { return; }
    pending = setTimeout(function () {
      pending = null;
      fetch(location.href, { credentials: "same-origin", headers: { "X-Cordon-Refresh": "1" } })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) { if (html) { swap(html); } })
        .catch(function () {});
    }, 100);
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.matches("form[data-live]")) { return; }
    event.preventDefault();
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
  }
})();
