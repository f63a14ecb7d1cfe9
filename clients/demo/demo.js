// The demo page: a live ticker table over the tickfan client (the global
// `Tickfan` of tickfan.js). It counts what a user of the client should
// never see — gaps and duplicates — and logs every resume, so that
// dropping the connection shows the recovery at work. `window.tickfanDemo`
// exposes the counters (the browser test reads them).
(() => {
  "use strict";
  const params = new URLSearchParams(location.search);
  const DEFAULT_SYMBOLS = ["AAPL", "MSFT", "GOOG", "AMZN", "NVDA", "META", "TSLA", "JPM", "V", "XOM", "KO", "IBM"];
  const symbols = (params.get("symbols") || "").split(",").filter(Boolean);
  const topics = symbols.length ? symbols : DEFAULT_SYMBOLS;
  const $ = (id) => document.getElementById(id);
  const stats = { ticks: 0, gaps: 0, dups: 0, resumes: 0, recovered: 0, unrecovered: 0, state: "connecting", transport: "", latencies: [] };
  window.tickfanDemo = stats;

  const tf = new Tickfan(location.origin, {
    token: params.get("token") || undefined,
    livenessMs: Number(params.get("liveness_ms")) || undefined,
  });
  stats.client = tf;

  function log(text, kind = "") {
    const li = document.createElement("li");
    li.className = kind;
    li.textContent = `${new Date().toLocaleTimeString()} ${text}`;
    $("log").prepend(li);
    while ($("log").children.length > 200) $("log").lastChild.remove();
  }

  tf.on("state", (s) => {
    stats.state = s.state;
    stats.transport = s.transport;
    $("state").textContent = s.state;
    $("transport").textContent = `over ${s.transport}`;
    $("dot").className = `dot ${s.state}`;
    $("retry").textContent = s.retryAt ? `retry in ${(s.retryInMs / 1000).toFixed(1)} s` : "";
    const why = s.reason ? ` (${s.reason})` : "";
    log(`${s.state} ${s.transport}${why}`, s.state === "connected" ? "good" : s.state === "disconnected" ? "bad" : "");
  });
  tf.on("error", (e) => log(`error ${e.code}: ${e.message}`, "bad"));

  const rows = new Map();
  const tbody = document.querySelector("#board tbody");
  for (const topic of topics) {
    const tr = document.createElement("tr");
    tr.innerHTML = `<td>${topic}</td><td class="last">–</td><td class="chg">–</td><td class="spark"></td><td class="seq">–</td><td class="age">–</td>`;
    tbody.appendChild(tr);
    rows.set(topic, { tr, first: undefined, last: undefined, lastSeq: undefined, at: 0, prices: [] });
  }

  function sparkline(prices) {
    if (prices.length < 2) return "";
    const w = 120, h = 26;
    const lo = Math.min(...prices), hi = Math.max(...prices);
    const span = hi - lo || 1;
    const pts = prices.map((p, i) => `${((i / (prices.length - 1)) * w).toFixed(1)},${(h - 2 - ((p - lo) / span) * (h - 4)).toFixed(1)}`).join(" ");
    const color = prices[prices.length - 1] >= prices[0] ? "#2ea043" : "#e5534b";
    return `<svg width="${w}" height="${h}" viewBox="0 0 ${w} ${h}"><polyline fill="none" stroke="${color}" stroke-width="1.5" points="${pts}"/></svg>`;
  }

  let subs = [];
  function subscribeAll(maxHz) {
    for (const s of subs) s.unsubscribe();
    subs = topics.map((topic) => {
      const sub = tf.subscribe(topic, maxHz ? { maxHz } : {});
      const row = rows.get(topic);
      row.lastSeq = undefined; // a new subscription starts from the snapshot
      sub.on("subscribed", (e) => {
        // The snapshot and a resume's replay are old news: their age is not
        // the feed's latency, so only ticks after e.seq are measured.
        row.replayUntil = e.seq;
        if (!e.resumed) return;
        stats.resumes++;
        if (e.recovered) stats.recovered++;
        else stats.unrecovered++;
        log(`${topic} resumed at ${e.seq}: ${e.recovered ? "recovered every tick" : "NOT recovered"}`, e.recovered ? "good" : "bad");
      });
      sub.on("gap", (g) => {
        stats.gaps++;
        log(`${topic} gap ${g.from}..${g.to}`, "bad");
      });
      sub.on("error", (e) => log(`${topic} error ${e.code}: ${e.message}`, "bad"));
      sub.on("tick", (t) => onTick(row, t));
      return sub;
    });
  }

  function onTick(row, t) {
    // The client drops duplicates and reports gaps itself; the page checks it.
    if (row.lastSeq !== undefined && t.seq <= row.lastSeq) stats.dups++;
    row.lastSeq = t.seq;
    stats.ticks++;
    if (t.seq > (row.replayUntil ?? Infinity)) stats.latencies.push(Date.now() - t.ts / 1000);
    if (stats.latencies.length > 1000) stats.latencies.splice(0, stats.latencies.length - 1000);
    const price = typeof t.data === "object" && t.data ? Number(t.data.price) : Number(t.data);
    if (!Number.isFinite(price)) return;
    const prev = row.last;
    row.first ??= price;
    row.last = price;
    row.at = Date.now();
    row.prices.push(price);
    if (row.prices.length > 60) row.prices.shift();
    const cells = row.tr.children;
    cells[1].textContent = price.toFixed(2);
    const change = price - row.first;
    cells[2].textContent = `${change >= 0 ? "+" : ""}${change.toFixed(2)} (${((change / row.first) * 100).toFixed(2)}%)`;
    cells[2].className = `chg ${change >= 0 ? "up" : "down"}`;
    cells[4].textContent = t.seq;
    row.dirty = true;
    if (prev !== undefined && price !== prev) {
      // The Web Animations API restarts a flash without forcing a layout.
      const color = price > prev ? "rgba(46,160,67,.3)" : "rgba(229,83,75,.3)";
      row.flash?.cancel();
      row.flash = row.tr.animate([{ backgroundColor: color }, { backgroundColor: "transparent" }], { duration: 400, easing: "ease-out" });
    }
  }

  function percentile(sorted, p) {
    return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
  }

  setInterval(() => {
    const now = Date.now();
    for (const row of rows.values()) {
      if (row.at) row.tr.children[5].textContent = `${((now - row.at) / 1000).toFixed(1)} s`;
      if (row.dirty) {
        row.tr.children[3].innerHTML = sparkline(row.prices);
        row.dirty = false;
      }
    }
    $("ticks").textContent = stats.ticks.toLocaleString();
    $("resumes").textContent = stats.unrecovered ? `${stats.resumes} (${stats.unrecovered} lost)` : String(stats.resumes);
    $("gaps").textContent = stats.gaps;
    $("dups").textContent = stats.dups;
    const sorted = [...stats.latencies].sort((a, b) => a - b);
    if (sorted.length) {
      stats.p50 = percentile(sorted, 50);
      stats.p99 = percentile(sorted, 99);
      $("p50").textContent = stats.p50.toFixed(1);
      $("p99").textContent = stats.p99.toFixed(1);
    }
  }, 250);

  $("drop").onclick = () => {
    log("dropping the connection", "info");
    tf.drop();
  };
  for (const t of ["websocket", "sse", "poll"]) {
    $(`use-${t}`).onclick = () => {
      log(`switching to ${t}`, "info");
      tf.useTransport(t);
    };
  }
  $("maxhz").onchange = (e) => {
    const hz = Number(e.target.value) || undefined;
    log(`max_hz ${hz ?? "off"}: subscribing again`, "info");
    subscribeAll(hz);
  };
  subscribeAll(undefined);
})();
