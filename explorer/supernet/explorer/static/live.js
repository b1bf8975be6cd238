// Live updates without reloading: new protocol events arrive over server-sent events
// (/api/v1/live); the feed gets a line per event and the totals are refreshed.
(function () {
  "use strict";
  var body = document.body;
  var statusEl = document.getElementById("live-status");
  var feed = document.getElementById("live-feed");

  function eth(wei) {
    var v = BigInt(wei);
    if (v === 0n) return "0 ETH";
    if (v < 1000000000000n) return (Number(v) / 1e9).toLocaleString("en", {maximumFractionDigits: 3}) + " gwei";
    return (Number(v) / 1e18).toLocaleString("en", {maximumFractionDigits: 6}) + " ETH";
  }

  function ago(ts) {
    var d = Math.round(Date.now() / 1000 - ts), a = Math.abs(d), t;
    if (a < 60) t = a + " s"; else if (a < 3600) t = Math.floor(a / 60) + " min";
    else if (a < 86400) t = Math.floor(a / 3600) + " h"; else t = Math.floor(a / 86400) + " d";
    return d < 0 ? "in " + t : t + " ago";
  }

  function refreshTimes() {
    document.querySelectorAll("time[data-ts]").forEach(function (el) { el.textContent = ago(+el.dataset.ts); });
  }

  function refreshTotals() {
    if (!document.querySelector("[data-total]")) return;
    fetch("/api/v1/totals").then(function (r) { return r.json(); }).then(function (t) {
      document.querySelectorAll("[data-total]").forEach(function (el) {
        var v = t[el.dataset.total];
        if (v === undefined) return;
        el.textContent = el.hasAttribute("data-wei") ? eth(v) : Number(v).toLocaleString("en");
      });
    });
  }

  function addLine(ev) {
    if (!feed) return;
    var li = document.createElement("li");
    li.className = "new";
    li.dataset.eventId = ev.id;
    var name = document.createElement("span");
    name.className = "ev-name";
    name.textContent = ev.name;
    li.appendChild(name);
    li.appendChild(document.createTextNode(" · block " + ev.block + " · "));
    var time = document.createElement("time");
    time.dataset.ts = ev.timestamp;
    time.title = new Date(ev.timestamp * 1000).toISOString();
    time.textContent = ago(ev.timestamp);
    li.appendChild(time);
    if (ev.subject) {
      li.appendChild(document.createTextNode(" · "));
      var a = document.createElement("a");
      a.href = "/address/" + ev.subject;
      a.className = "mono";
      a.textContent = ev.subject.slice(0, 10) + "…";
      li.appendChild(a);
    }
    feed.insertBefore(li, feed.firstChild);
    while (feed.children.length > 50) feed.removeChild(feed.lastChild);
  }

  if (window.EventSource && feed) {  // pages with a live feed (the network page)
    var after = body.dataset.liveAfter || "0";
    var source = new EventSource("/api/v1/live?after=" + encodeURIComponent(after));
    var pending = null;
    source.onopen = function () { if (statusEl) statusEl.textContent = "· live updates on"; };
    source.onerror = function () { if (statusEl) statusEl.textContent = "· live updates reconnecting…"; };
    source.addEventListener("event", function (msg) {
      addLine(JSON.parse(msg.data));
      clearTimeout(pending);
      pending = setTimeout(refreshTotals, 300);
    });
  }
  setInterval(refreshTimes, 10000);
})();
