"use strict";
(function () {
  var T = JSON.parse(document.getElementById("texts").textContent);
  var base = window.location.pathname.replace(/\/$/, "");
  var state = { attempt: null, data: null };
  function $(id) { return document.getElementById(id); }
  function two(n) { return (n < 10 ? "0" : "") + n; }
  function left(iso) {
    var ms = Date.parse(iso) - Date.now();
    if (!(ms > 0)) { return "0:00"; }
    var s = Math.floor(ms / 1000), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    return (h ? h + ":" + two(m) : m) + ":" + two(s % 60);
  }
  function tick() {
    var inv = $("invoice-countdown");
    inv.textContent = left(inv.getAttribute("data-until"));
    if (state.attempt) {
      var lock = state.attempt.rate_locked_until;
      $("lock-countdown").textContent = left(lock);
      if (Date.parse(lock) <= Date.now() && state.attempt.status === "PENDING") {
        $("lock-line").textContent = T.lock_over;
      }
    }
  }
  function show(attempt) {
    state.attempt = attempt;
    $("choose").hidden = true;
    $("attempt").hidden = false;
    $("amount").textContent = attempt.crypto_amount;
    $("asset").textContent = attempt.currency.split(":")[1];
    $("address").textContent = attempt.address;
    $("memo-field").hidden = !attempt.memo;
    $("memo").textContent = attempt.memo || "";
    $("qr").innerHTML = attempt.qr_svg;
    tick();
  }
  function render(data) {
    state.data = data;
    var el = $("status"), st = data.status, text = T[st] || st;
    var open = data.payments.length ? data.payments[data.payments.length - 1] : null;
    if (open && st !== "COMPLETED") {
      var tx = open.transactions.filter(function (t) { return t.state !== "orphaned"; });
      if (tx.length && st !== "PARTIAL") {
        var c = tx.reduce(function (m, t) { return Math.min(m, t.confirmations); }, 1e9);
        text = T.CONFIRMING + " " + Math.min(c, open.confirmations_required) + "/" + open.confirmations_required;
      }
    }
    el.textContent = text;
    el.setAttribute("data-state", st);
    $("remaining").textContent = data.remaining.amount;
    $("remaining-line").hidden = !(st === "PARTIAL" || st === "PARTIALLY_EXPIRED");
    var closed = st === "COMPLETED" || st === "EXPIRED" || st === "PARTIALLY_EXPIRED" || st === "CANCELLED";
    var needChoice = st === "PARTIAL" && open && open.transactions.length > 0;
    $("pay-remainder").hidden = !needChoice || !$("choose").hidden;
    if (closed || needChoice) {
      $("attempt").hidden = true;
    } else if (open && (!state.attempt || state.attempt.id !== open.id)) {
      show(open);
    }
    if (state.attempt && open) { state.attempt.status = open.status; }
    var r = $("redirect");
    r.hidden = !(st === "COMPLETED" && r.getAttribute("href"));
  }
  function request(method, path, body) {
    return fetch(base + path, {
      method: method, credentials: "same-origin", cache: "no-store",
      headers: body ? { "Content-Type": "application/json" } : {},
      body: body ? JSON.stringify(body) : undefined
    }).then(function (res) {
      return res.json().then(function (json) { return { ok: res.ok, status: res.status, json: json }; });
    });
  }
  function poll() {
    request("GET", "/status").then(function (r) { if (r.ok) { render(r.json); } })
      .catch(function () {}).then(function () { window.setTimeout(poll, 2000); });
  }
  function choose(currency) {
    $("choose-error").textContent = "";
    request("POST", "/attempts", { currency: currency }).then(function (r) {
      if (r.ok) { state.attempt = null; render(r.json); return; }
      $("choose-error").textContent = r.status === 503 ? T.unavailable : (r.json.error && r.json.error.message) || T.error;
    }).catch(function () { $("choose-error").textContent = T.error; });
  }
  Array.prototype.forEach.call(document.querySelectorAll("button.pick"), function (b) {
    b.addEventListener("click", function () { choose(b.getAttribute("data-currency")); });
  });
  Array.prototype.forEach.call(document.querySelectorAll("button.copy"), function (b) {
    b.addEventListener("click", function () {
      var text = $(b.getAttribute("data-copy")).textContent;
      if (navigator.clipboard) { navigator.clipboard.writeText(text).then(function () { b.textContent = T.copied; }, function () {}); }
    });
  });
  $("pay-remainder").addEventListener("click", function () {
    $("choose").hidden = false; $("pay-remainder").hidden = true; state.attempt = null;
  });
  window.setInterval(tick, 1000);
  tick();
  poll();
})();
