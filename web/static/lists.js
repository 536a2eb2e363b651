// The Lists page: while "update now" runs, poll /api/lists/update and show
// which source it is on, n of m, and each source's result. Without this
// script a plain reload of /lists shows the same.
(function () {
  "use strict";
  var box = document.getElementById("lists-progress");
  var summary = document.getElementById("lists-progress-summary");
  var list = document.getElementById("lists-progress-sources");
  var button = document.getElementById("lists-update-button");
  if (!box || !summary || !list) { return; }

  function show(status) {
    box.setAttribute("data-state", status.state);
    var text;
    if (status.state === "running") {
      text = "Updating: " + status.done + " of " + status.total + " downloads done";
      if (status.current) { text += ", now " + status.current; }
      if (status.done === status.total) { text += ", reloading the lists"; }
      text += ".";
      summary.className = "muted";
    } else if (status.state === "done" || status.state === "failed") {
      text = "Finished: " + status.message;
      summary.className = status.state === "failed" ? "problem" : "notice";
    } else {
      return;
    }
    summary.textContent = text;
    while (list.firstChild) { list.removeChild(list.firstChild); }
    status.sources.forEach(function (source) {
      var item = document.createElement("li");
      var tag = document.createElement("span");
      tag.className = "tag progress-" + source.state;
      tag.textContent = source.state;
      item.appendChild(tag);
      item.appendChild(document.createTextNode(" " + source.id));
      if (source.detail) {
        var detail = document.createElement("span");
        detail.className = "muted";
        detail.textContent = " " + source.detail;
        item.appendChild(document.createTextNode(" "));
        item.appendChild(detail);
      }
      list.appendChild(item);
    });
    if (button) {
      button.disabled = status.state === "running";
      button.textContent = status.state === "running" ? "Updating…" : "Update now";
    }
  }

  function poll() {
    fetch("/api/lists/update", { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (status) {
        if (!status) { return; }
        show(status);
        if (status.state === "running") { window.setTimeout(poll, 500); }
      })
      .catch(function () { window.setTimeout(poll, 2000); });
  }

  if (box.getAttribute("data-state") === "running") { poll(); }
})();
