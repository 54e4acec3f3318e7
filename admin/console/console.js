// Tandem's console: polls /v1/stat (the stat document) every second and
// renders it; rates are differences of consecutive samples. No build step,
// no dependencies: this file is served as it is from the binary.
(function () {
  "use strict";
  var PERIOD_MS = 1000, WINDOW_S = 300;
  var history = []; // {t, pub, del}
  var last = null;

  function $(id) { return document.getElementById(id); }
  function text(id, v) { $(id).textContent = v; }
  function bytes(n) {
    var u = ["B", "KiB", "MiB", "GiB", "TiB"], i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n : n.toFixed(1)) + " " + u[i];
  }
  function duration(s) {
    s = Math.floor(s);
    var d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
    return (d ? d + "d " : "") + (d || h ? h + "h " : "") + (d || h || m ? m + "m " : "") + (s % 60) + "s";
  }
  function rate(v) { return v >= 100 ? Math.round(v).toLocaleString() : v.toFixed(1); }
  function row(tbody, cells) {
    var tr = document.createElement("tr");
    cells.forEach(function (c) {
      var td = document.createElement("td");
      if (c && typeof c === "object") { td.textContent = c.text; td.className = c.cls; } else { td.textContent = c; }
      tr.appendChild(td);
    });
    tbody.appendChild(tr);
  }

  function render(st, now) {
    text("instance", st.instance);
    text("version", st.version);
    text("engine", st.engine + ", " + st.loops + " loops");
    text("uptime", duration(st.uptime_seconds));
    text("storage", st.storage_error ? st.storage + ": " + st.storage_error : (st.storage || "ok"));
    text("stored", st.messages_stored.toLocaleString());
    text("delivered", (st.messages_delivered || 0).toLocaleString());
    text("journalBytes", bytes(st.journal.used_bytes || 0));
    text("segments", st.journal.segments);
    text("lastSeq", st.journal.last_seq);
    text("connections", st.connections);
    text("subscriptions", st.subscriptions);
    text("slow", st.slow_consumers || 0);
    if (last) {
      var dt = (now - last.t) / 1000;
      if (dt > 0) {
        var pub = Math.max(0, st.messages_stored - last.stored) / dt;
        var del = Math.max(0, (st.messages_delivered || 0) - last.delivered) / dt;
        text("pubRate", rate(pub));
        text("delRate", rate(del));
        history.push({ t: now, pub: pub, del: del });
        while (history.length && history[0].t < now - WINDOW_S * 1000) history.shift();
        plot(now);
      }
    }
    last = { t: now, stored: st.messages_stored, delivered: st.messages_delivered || 0 };

    var peers = $("peers").tBodies[0];
    peers.innerHTML = "";
    (st.replication || []).forEach(function (d) {
      row(peers, [d.name, d.addr || "(accepts)", d.mode, { text: d.state, cls: "state-" + d.state },
        d.connected ? "yes" : "no", d.lag_messages.toLocaleString(), (d.lag_seconds * 1000).toFixed(0) + " ms"]);
    });
    $("noPeers").style.display = (st.replication || []).length ? "none" : "";
    var clients = $("clients").tBodies[0];
    clients.innerHTML = "";
    (st.clients || []).forEach(function (c) {
      row(clients, [c.name, c.remote, c.loop, c.subscriptions, c.last_pub_seq]);
    });
  }

  function plot(now) {
    var cv = $("plot"), g = cv.getContext("2d"), w = cv.width, h = cv.height, padL = 60, padB = 20, padT = 12;
    g.clearRect(0, 0, w, h);
    var max = 1;
    history.forEach(function (p) { max = Math.max(max, p.pub, p.del); });
    g.strokeStyle = "#e3e5ea"; g.fillStyle = "#667"; g.font = "11px sans-serif"; g.lineWidth = 1;
    for (var i = 0; i <= 4; i++) {
      var y = padT + (h - padB - padT) * i / 4 + 0.5;
      g.beginPath(); g.moveTo(padL, y); g.lineTo(w, y); g.stroke();
      g.fillText(rate(max * (4 - i) / 4), 4, y + 4);
    }
    g.fillText("-" + WINDOW_S / 60 + " min", padL, h - 4);
    g.fillText("now", w - 24, h - 4);
    function line(key, color, width) {
      g.strokeStyle = color; g.lineWidth = width; g.beginPath();
      history.forEach(function (p, k) {
        var x = padL + (w - padL) * (1 - (now - p.t) / (WINDOW_S * 1000));
        var y = padT + (h - padB - padT) * (1 - p[key] / max);
        if (k === 0) g.moveTo(x, y); else g.lineTo(x, y);
      });
      g.stroke();
    }
    // delivery under publish: with one subscriber the two are equal
    line("del", "rgba(239,108,0,0.6)", 5);
    line("pub", "#1565c0", 2);
  }

  function status(ok, why, id) {
    var s = $(id || "status");
    s.textContent = why;
    s.className = "status " + (ok ? "ok" : "bad");
  }

  function poll() {
    fetch("v1/stat", { cache: "no-store" }).then(function (r) {
      if (!r.ok) throw new Error("stat: HTTP " + r.status);
      return r.json();
    }).then(function (st) {
      render(st, Date.now());
      return fetch("healthz", { cache: "no-store" }).then(function (r) {
        return r.text().then(function (t) { status(r.ok, t.trim()); });
      }).then(function () {
        return fetch("readyz", { cache: "no-store" });
      }).then(function (r) {
        return r.text().then(function (t) { status(r.ok, t.trim(), "ready"); });
      });
    }).catch(function (e) { status(false, String(e.message || e)); })
      .then(function () { setTimeout(poll, PERIOD_MS); });
  }
  text("window", WINDOW_S / 60);
  poll();
})();
