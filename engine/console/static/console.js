// Synvoice console: live updates by server-sent events, no framework, no build step.
// A page with <div id="live" data-live="1"> re-fetches its live part (X-Fragment)
// when the views move; the wizard listens to "progress" itself.
(function () {
  "use strict";
  var live = document.getElementById("live");
  document.addEventListener("click", function (e) {
    var b = e.target.closest("[data-confirm]");
    if (b && !window.confirm(b.getAttribute("data-confirm"))) e.preventDefault();
  });
  if (!document.body.dataset.csrf || !window.EventSource) return;
  var pending = false;
  var edited = false; // the person changed a field: their input is never replaced
  document.addEventListener("input", function (e) { if (live && live.contains(e.target)) edited = true; });
  function typing() {
    var a = document.activeElement;
    return edited || (a && live.contains(a) && /INPUT|SELECT|TEXTAREA/.test(a.tagName));
  }
  function refresh() {
    if (!live || live.dataset.live !== "1" || pending || typing()) return;
    pending = true;
    fetch(window.location.href, { headers: { "X-Fragment": "1" }, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        pending = false;
        if (html !== null && !typing()) { live.innerHTML = html; document.dispatchEvent(new Event("synvoice:refreshed")); }
      })
      .catch(function () { pending = false; });
  }
  var es = new EventSource("/events");
  window.synvoiceEvents = es;
  es.addEventListener("views", refresh);
  es.addEventListener("progress", function (e) {
    var d = JSON.parse(e.data);
    var bar = document.getElementById("progress");
    if (bar) { bar.max = d.total || 1; bar.value = d.done; }
    var label = document.getElementById("progress-label");
    if (label) label.textContent = d.phase + ": " + d.done + " / " + d.total;
    if (d.finished) refresh();
  });
  // (Re)connected: whatever changed while the page loaded was not sent to it.
  es.addEventListener("open", function () { document.body.dataset.live = "on"; refresh(); });
})();
