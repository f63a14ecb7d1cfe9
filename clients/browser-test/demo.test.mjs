// The demo page in headless Chromium (Debian's `chromium`, driven by
// playwright-core; nothing here downloads a browser), served by the real
// broker with --demo-feed, through the TCP proxy of the client tests:
// live ticks render; a cut connection resumes with no gap and no
// duplicate on the page's own counters; offline/online; a wake
// (visibilitychange, pageshow) on a quiet connection; the transport
// buttons; and the screenshot the README shows (docs/demo.png, or
// $TICKFAN_SCREENSHOT).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { Broker, Proxy, until } from "../js/test/harness.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const SCREENSHOT = process.env.TICKFAN_SCREENSHOT ?? path.resolve(here, "../../docs/demo.png");

let broker, proxy, context, page, profile;
const demo = () => page.evaluate(() => {
  const d = window.tickfanDemo;
  return d && { ticks: d.ticks, gaps: d.gaps, dups: d.dups, resumes: d.resumes, recovered: d.recovered, unrecovered: d.unrecovered, state: d.state, transport: d.transport, p50: d.p50, p99: d.p99 };
});
const waitDemo = (check, what, ms = 15000) => until(async () => { const d = await demo(); return d && check(d) && d; }, ms, what);

before(async () => {
  broker = await Broker.start(["--demo-feed", "--set", "demo.feed_ticks_per_second=120", "--set", "broker.heartbeat_interval_ms=1000"]);
  proxy = await Proxy.start(broker.port);
  profile = mkdtempSync(path.join(tmpdir(), "tickfan-chromium-"));
  // A fresh profile; without the background-networking flags Chromium's own outgoing
  // connections (component updates, sync) get in the way on these machines.
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    viewport: { width: 1280, height: 760 },
  });
  page = context.pages()[0] ?? (await context.newPage());
  page.on("pageerror", (e) => console.error("page error:", e));
  await page.goto(`${proxy.url}/demo`);
});

after(async () => {
  await context?.close();
  await proxy?.close();
  await broker?.stop();
  if (profile) rmSync(profile, { recursive: true, force: true });
});

test("the demo page renders live ticks from --demo-feed", async () => {
  const d = await waitDemo((d) => d.state === "connected" && d.ticks > 100, "100 ticks on the page");
  assert.equal(d.transport, "websocket");
  const rows = await page.$$eval("#board tbody tr", (trs) => trs.map((tr) => [...tr.children].map((td) => td.textContent)));
  assert.equal(rows.length, 12);
  const priced = rows.filter((r) => /^\d+\.\d\d$/.test(r[1]));
  assert.ok(priced.length >= 10, `prices in the table: ${JSON.stringify(rows)}`);
  assert.ok(await page.$$eval("#board svg polyline", (l) => l.length) >= 10, "sparklines");
  assert.ok(Number.isFinite(d.p50), "latency measured");
  assert.equal(await page.textContent("#state"), "connected");
});

test("the connection is cut and restored: every symbol resumes, no gap, no duplicate", async () => {
  const before = await demo();
  proxy.down = true;
  proxy.cut();
  await waitDemo((d) => d.state !== "connected", "the page sees the cut", 5000);
  // An outage while the feed goes on publishing (~1.5 s, ~180 ticks).
  const outage = Date.now() + 1500;
  await until(() => Date.now() > outage, 3000, "the outage");
  proxy.down = false;
  const d = await waitDemo((d) => d.state === "connected" && d.resumes >= before.resumes + 12, "12 resumes");
  await waitDemo((d) => d.ticks > before.ticks + 200, "ticks after the resume");
  const now = await demo();
  assert.deepEqual([now.gaps, now.dups, now.unrecovered], [0, 0, 0], JSON.stringify(now));
  assert.equal(now.recovered, d.resumes);
  const log = await page.textContent("#log");
  assert.match(log, /resumed at \d+: recovered every tick/);
});

test("offline closes the connection, online reconnects at once and recovers", async () => {
  const before = await demo();
  await context.setOffline(true);
  await waitDemo((d) => d.state === "disconnected", "offline → disconnected", 5000);
  assert.match(await page.textContent("#log"), /disconnected \w+ \(offline\)/);
  await until(() => new Promise((r) => setTimeout(() => r(true), 800)), 2000, "a moment offline");
  await context.setOffline(false);
  await waitDemo((d) => d.state === "connected" && d.resumes >= before.resumes + 12, "online → connected, resumed", 5000);
  await waitDemo((d) => d.ticks > before.ticks + 100, "ticks after online");
  const now = await demo();
  assert.deepEqual([now.gaps, now.dups, now.unrecovered], [0, 0, 0], JSON.stringify(now));
});

test("a page that wakes (visibilitychange, pageshow) on a quiet connection reconnects at once", async () => {
  // A second page with a long liveness limit (9 s; quiet after 3 s), so
  // that only the wake can explain a reconnect within the test's bounds.
  const main = page;
  page = await context.newPage();
  try {
    await page.goto(`${proxy.url}/demo?liveness_ms=9000`);
    await waitDemo((d) => d.state === "connected" && d.ticks > 50, "the second page live");
    for (const wake of ["visibilitychange", "pageshow"]) {
      const before = await demo();
      proxy.freeze(); // open but silent: what a laptop finds after sleeping
      const frozenAt = Date.now();
      await until(() => Date.now() - frozenAt > 3500, 5000, "a quiet spell");
      await page.evaluate((wake) => {
        if (wake === "pageshow") window.dispatchEvent(new PageTransitionEvent("pageshow", { persisted: true }));
        else document.dispatchEvent(new Event("visibilitychange"));
      }, wake);
      await waitDemo((d) => d.state === "connected" && d.resumes >= before.resumes + 12, `${wake}: resumed`, 4000);
      assert.ok(Date.now() - frozenAt < 8000, `${wake}: reconnected before the liveness limit`);
      assert.match(await page.textContent("#log"), /quiet after the page woke/);
      await waitDemo((d) => d.ticks > before.ticks + 50, `${wake}: ticks after`);
      const now = await demo();
      assert.deepEqual([now.gaps, now.dups, now.unrecovered], [0, 0, 0], `${wake}: ${JSON.stringify(now)}`);
      // The freeze caught the pages' idle keep-alive sockets too; close them
      // so that Chromium does not send the next request into one.
      proxy.dropFrozen();
    }
  } finally {
    proxy.dropFrozen();
    await page.close();
    page = main;
  }
});

test("the buttons force SSE and long-poll, with the same ticks", async () => {
  for (const [button, transport] of [["#use-sse", "sse"], ["#use-poll", "poll"], ["#use-websocket", "websocket"]]) {
    const before = await demo();
    await page.click(button);
    await waitDemo((d) => d.transport === transport && d.state === "connected" && d.ticks > before.ticks + 100, `ticks over ${transport}`);
    const now = await demo();
    assert.deepEqual([now.gaps, now.dups, now.unrecovered], [0, 0, 0], `${transport}: ${JSON.stringify(now)}`);
  }
});

test("screenshot for the README", async () => {
  // A drop, so that the log shows a resume as well as the live table.
  await page.click("#drop");
  await waitDemo((d) => d.state === "connected", "reconnected after the drop");
  const resumed = await demo();
  await waitDemo((d) => d.ticks > resumed.ticks + 150, "a few more ticks");
  mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
  await page.screenshot({ path: SCREENSHOT });
  const now = await demo();
  console.log(`demo page: ${now.ticks} ticks, latency p50 ${now.p50?.toFixed(1)} ms, p99 ${now.p99?.toFixed(1)} ms, ${now.resumes} resumes`);
  assert.deepEqual([now.gaps, now.dups], [0, 0]);
});
