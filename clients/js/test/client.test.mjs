// The JavaScript client against the real broker, through a proxy the test
// controls: order, resume after a cut without gap or duplicate, a gap when
// the outage outlasts the history ring, an unrecovered `subscribed` after
// a broker restart (new epoch), fallback to SSE and to long-poll, and the
// backoff's jitter bounds.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { Tickfan, backoffDelay, backoffCap } from "../dist/tickfan.mjs";
import { Broker, Proxy, until, record, recordStates, range } from "./harness.mjs";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import net from "node:net";
import path from "node:path";

const cleanups = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

async function setup(brokerArgs = []) {
  const broker = await Broker.start(brokerArgs);
  const proxy = await Proxy.start(broker.port);
  cleanups.push(() => broker.stop(), () => proxy.close());
  return { broker, proxy };
}

function client(url, opts = {}) {
  const tf = new Tickfan(url, {
    WebSocket,
    watchPage: false,
    backoff: { initialMs: 40, maxMs: 300, stableMs: 60000 },
    ...opts,
  });
  cleanups.push(() => tf.close());
  return tf;
}

/** Publishes ticks 1..n-ish to each topic in turn, as fast as the broker answers. */
async function publishRound(broker, topics, count, data = (i) => ({ i })) {
  for (let i = 0; i < count; i++) for (const t of topics) await broker.publish(t, data(i));
}

test("ticks arrive in order on every subscription", async () => {
  const { broker, proxy } = await setup();
  const tf = client(proxy.url);
  const a = record(tf.subscribe("A"));
  const b = record(tf.subscribe("B"));
  await until(() => a.subscribed.length && b.subscribed.length, 5000, "subscribed");
  assert.equal(tf.state.transport, "websocket");
  assert.deepEqual(a.subscribed[0], { topic: "A", seq: 0, epoch: a.subscribed[0].epoch, resumed: false, recovered: false });
  await publishRound(broker, ["A", "B"], 100);
  await until(() => a.seqs.length === 100 && b.seqs.length === 100, 10000, "200 ticks");
  assert.deepEqual(a.seqs, range(1, 100));
  assert.deepEqual(b.seqs, range(1, 100));
  assert.deepEqual(a.ticks[7].data, { i: 7 });
  assert.ok(a.ticks[0].ts > 1.7e15, "ts in microseconds");
  assert.deepEqual([a.gaps, b.gaps], [[], []]);
});

/** Cuts the connection mid-stream and restores it after more ticks were published. */
async function cutAndResume({ broker, proxy }, tf, topics, expectTransport) {
  const subs = topics.map((t) => tf.subscribe(t));
  const recs = subs.map(record);
  await until(() => recs.every((r) => r.subscribed.length) && tf.state.state === "connected", 10000, "subscribed");
  assert.equal(tf.state.transport, expectTransport);
  await publishRound(broker, topics, 40);
  await until(() => recs.every((r) => r.seqs.length === 40), 10000, "the first 40");
  // The numbering the ticks came in (a long-poll's topic nobody had
  // published to yet had an epoch of its own before the first tick).
  const epochs = subs.map((s) => s.epoch);
  const states = recordStates(tf);
  proxy.down = true;
  proxy.cut();
  await until(() => states.some((s) => s.state === "disconnected"), 5000, "disconnected");
  await publishRound(broker, topics, 60); // published during the outage
  proxy.down = false;
  await until(() => states.some((s) => s.state === "connected"), 10000, "reconnected");
  await publishRound(broker, topics, 20); // and after it
  await until(() => recs.every((r) => r.seqs.length >= 120), 10000, "all 120");
  for (const [i, r] of recs.entries()) {
    assert.deepEqual(r.seqs, range(1, 120), "no gap, no duplicate");
    assert.deepEqual(r.gaps, []);
    const resume = r.subscribed.at(-1);
    assert.equal(resume.resumed, true);
    assert.equal(resume.recovered, true, JSON.stringify(resume));
    assert.equal(resume.epoch, epochs[i]);
  }
  assert.equal(states.find((s) => s.state === "connected").transport, expectTransport, "sticky");
}

test("a cut mid-stream resumes every subscription with no gap and no duplicate", async () => {
  const env = await setup();
  const tf = client(env.proxy.url);
  await cutAndResume(env, tf, ["A", "B", "C"], "websocket");
});

test("an outage longer than the history ring gives an unrecovered subscribed and a gap", async () => {
  const { broker, proxy } = await setup(["--history-depth", "8"]);
  const tf = client(proxy.url);
  const a = record(tf.subscribe("A"));
  await until(() => a.subscribed.length, 5000, "subscribed");
  await publishRound(broker, ["A"], 5);
  await until(() => a.seqs.length === 5, 5000, "5 ticks");
  const states = recordStates(tf);
  proxy.down = true;
  proxy.cut();
  await until(() => states.some((s) => s.state === "disconnected"), 5000, "disconnected");
  await publishRound(broker, ["A"], 50); // 6..55; the ring keeps 48..55
  proxy.down = false;
  await until(() => a.seqs.at(-1) === 55, 10000, "tick 55");
  const resume = a.subscribed.at(-1);
  assert.deepEqual([resume.resumed, resume.recovered, resume.seq], [true, false, 55]);
  assert.deepEqual(a.gaps, [{ topic: "A", from: 6, to: 47 }]);
  assert.deepEqual(a.seqs, [...range(1, 5), ...range(48, 55)]);
});

test("a broker restart (new epoch) gives an unrecovered subscribed, then the new numbering", async () => {
  const first = await Broker.start();
  const proxy = await Proxy.start(first.port);
  cleanups.push(() => proxy.close());
  const tf = client(proxy.url);
  const a = record(tf.subscribe("A"));
  await until(() => a.subscribed.length, 5000, "subscribed");
  await publishRound(first, ["A"], 3);
  await until(() => a.seqs.length === 3, 5000, "3 ticks");
  const oldEpoch = a.subscribed[0].epoch;
  proxy.down = true;
  await first.stop();
  proxy.cut();
  const second = await Broker.start();
  cleanups.push(() => second.stop());
  proxy.targetPort = second.port;
  await publishRound(second, ["A"], 2); // seqs 1, 2 of another numbering
  proxy.down = false;
  await until(() => a.subscribed.length === 2, 10000, "the second subscribed");
  const resume = a.subscribed[1];
  assert.equal(resume.resumed, true);
  assert.equal(resume.recovered, false);
  assert.notEqual(resume.epoch, oldEpoch);
  await until(() => a.seqs.length === 4, 5000, "the snapshot");
  assert.deepEqual(a.gaps, [{ topic: "A", from: 1, to: 2 }]);
  await second.publish("A", { after: true });
  await until(() => a.seqs.length === 5, 5000, "a live tick");
  assert.deepEqual(a.seqs, [1, 2, 3, 2, 3], "the new numbering, after the gap and snapshot");
});

test("WebSocket refused by the proxy: SSE, with the same ticks and the same recovery", async () => {
  const env = await setup();
  env.proxy.refuseWebSocket = true;
  const tf = client(env.proxy.url);
  await cutAndResume(env, tf, ["A", "B"], "sse");
  assert.ok(env.proxy.requests.some((r) => r.startsWith("GET /ws")), "WebSocket tried first");
  assert.ok(env.proxy.requests.some((r) => r.startsWith("GET /sse?")));
});

test("WebSocket and SSE refused: long-poll, with the same ticks and the same recovery", async () => {
  const env = await setup();
  env.proxy.refuseWebSocket = true;
  env.proxy.refuseSse = true;
  const tf = client(env.proxy.url, { pollTimeoutSecs: 5 });
  await cutAndResume(env, tf, ["A", "B"], "poll");
  assert.ok(env.proxy.requests.some((r) => r.startsWith("GET /poll?")));
});

test("long-poll and SSE see a broker restart as a new epoch too", async () => {
  for (const transports of [["sse"], ["poll"]]) {
    const first = await Broker.start();
    const proxy = await Proxy.start(first.port);
    cleanups.push(() => proxy.close());
    const tf = client(proxy.url, { transports, pollTimeoutSecs: 5 });
    const a = record(tf.subscribe("R"));
    await first.publish("R", 1);
    await until(() => a.seqs.length === 1, 5000, `${transports}: first tick`);
    proxy.down = true;
    await first.stop();
    proxy.cut();
    const second = await Broker.start();
    cleanups.push(() => second.stop());
    proxy.targetPort = second.port;
    await second.publish("R", "new");
    proxy.down = false;
    await until(() => a.subscribed.some((s) => s.resumed && !s.recovered), 10000, `${transports}: unrecovered`);
    await until(() => a.ticks.some((t) => t.data === "new"), 5000, `${transports}: the new tick`);
    tf.close();
  }
});

test("backoff: full jitter under an exponential bound, observed on real retries", async () => {
  assert.deepEqual(
    range(0, 8).map((n) => backoffCap(n)),
    [500, 1000, 2000, 4000, 8000, 16000, 20000, 20000, 20000],
  );
  assert.equal(backoffDelay(3, {}, () => 0), 0);
  assert.equal(backoffDelay(3, {}, () => 0.5), 2000);
  for (let i = 0; i < 1000; i++) {
    const d = backoffDelay(i % 10);
    assert.ok(d >= 0 && d < backoffCap(i % 10));
  }
  // Against a port that refuses everything: every retry's delay lies in
  // [0, cap(attempt)), the next attempt starts no sooner, and the bound grows.
  const proxy = await Proxy.start(1);
  proxy.down = true;
  cleanups.push(() => proxy.close());
  const opts = { initialMs: 20, maxMs: 160, stableMs: 60000 };
  const tf = client(proxy.url, { backoff: opts, transports: ["websocket"] });
  tf.subscribe("A");
  const seen = [];
  tf.on("state", (s) => seen.push({ ...s, at: Date.now() }));
  await until(() => seen.filter((s) => s.state === "disconnected").length >= 7, 10000, "7 retries");
  tf.close();
  const drops = seen.filter((s) => s.state === "disconnected");
  drops.forEach((s, i) => {
    const cap = backoffCap(s.attempt - 1, opts);
    assert.ok(s.retryInMs >= 0 && s.retryInMs < cap, `retry ${i}: ${s.retryInMs} of ${cap}`);
    assert.ok(Math.abs(s.retryAt - s.at - s.retryInMs) < 5);
    const next = seen.find((n) => n.state === "connecting" && n.at >= s.at && seen.indexOf(n) > seen.indexOf(s));
    if (next) assert.ok(next.at - s.at >= s.retryInMs - 2, `retry ${i} waited ${next.at - s.at} of ${s.retryInMs}`);
  });
  assert.deepEqual(
    drops.slice(0, 6).map((s) => backoffCap(s.attempt - 1, opts)),
    [20, 40, 80, 160, 160, 160],
  );
});

test("publish over the WebSocket and over HTTP; unsubscribe stops the ticks", async () => {
  const { broker, proxy } = await setup();
  const tf = client(proxy.url);
  const sub = tf.subscribe("P");
  const p = record(sub);
  await until(() => tf.state.state === "connected" && p.subscribed.length, 5000, "connected");
  assert.deepEqual(await tf.publish("P", { over: "ws" }), {});
  await until(() => p.seqs.length === 1, 5000, "the ws publish");
  const http = client(proxy.url, { transports: ["poll"] });
  assert.deepEqual(await http.publish("P", { over: "http" }), { topic: "P", seq: 2 });
  await until(() => p.seqs.length === 2, 5000, "the http publish");
  assert.deepEqual(p.ticks.map((t) => t.data), [{ over: "ws" }, { over: "http" }]);
  sub.unsubscribe();
  await new Promise((r) => setTimeout(r, 50));
  await broker.publish("P", 3);
  const q = record(tf.subscribe("Q"));
  await until(() => q.subscribed.length, 5000, "a later subscribe");
  assert.equal(p.seqs.length, 2, "nothing after unsubscribe");
});

test("a connection gone silent (no heartbeat) is replaced, and resumes with no gap", async () => {
  const { broker, proxy } = await setup(["--set", "broker.heartbeat_interval_ms=200"]);
  const tf = client(proxy.url, { livenessMs: 1000 });
  const a = record(tf.subscribe("L"));
  await until(() => a.subscribed.length, 5000, "subscribed");
  await publishRound(broker, ["L"], 10);
  await until(() => a.seqs.length === 10, 5000, "10 ticks");
  const states = recordStates(tf);
  // The link stays open but nothing passes: a dead NAT mapping, a frozen peer.
  proxy.freeze();
  await publishRound(broker, ["L"], 10);
  await until(() => states.some((s) => s.state === "disconnected" && s.reason === "no heartbeat"), 5000, "liveness");
  await until(() => states.some((s) => s.state === "connected"), 5000, "reconnected");
  await until(() => a.seqs.length === 20, 5000, "the missed ticks");
  assert.deepEqual(a.seqs, range(1, 20));
  assert.deepEqual(a.gaps, []);
  assert.equal(a.subscribed.at(-1).recovered, true);
});

test("subscribing while the connection is on its way, on every transport", async () => {
  const { broker, proxy } = await setup();
  for (const transport of ["websocket", "sse", "poll"]) {
    const tf = client(proxy.url, { transports: [transport], pollTimeoutSecs: 5 });
    const x = record(tf.subscribe(`X-${transport}`));
    await new Promise((r) => setTimeout(r, 0)); // the request has left
    const y = record(tf.subscribe(`Y-${transport}`));
    await until(() => x.subscribed.length && y.subscribed.length, 5000, `${transport}: both subscribed`);
    await broker.publish(`X-${transport}`, 1);
    await broker.publish(`Y-${transport}`, 2);
    await until(() => x.seqs.length === 1 && y.seqs.length === 1, 5000, `${transport}: both ticks`);
    // And a third once connected.
    const z = record(tf.subscribe(`Z-${transport}`));
    await until(() => z.subscribed.length, 5000, `${transport}: the third subscribed`);
    await broker.publish(`Z-${transport}`, 3);
    await until(() => z.seqs.length === 1, 5000, `${transport}: its tick`);
    assert.deepEqual([x.seqs, y.seqs, z.seqs], [[1], [1], [1]]);
    tf.close();
  }
});

for (const [how, heartbeatMs] of [["the seq jump", 60000], ["a heartbeat", 300]]) {
  test(`ticks a slow-consumer policy skipped are fetched again from the history (seen by ${how})`, async () => {
    // A reader that stalls while ~12 MB are published: the broker's queue
    // for it passes 64 KiB and `drop` skips ticks. Once it reads again, the
    // next tick's seq jump, or on a quiet topic a heartbeat's seq, makes the
    // client resubscribe from its last tick and the history replays the rest.
    const { broker, proxy } = await setup([
      "--slow-consumer", "drop", "--max-queue-bytes", "65536", "--history-depth", "10000",
      "--set", "http.max_body_bytes=67108864", "--set", `broker.heartbeat_interval_ms=${heartbeatMs}`,
    ]);
    const tf = client(proxy.url);
    const s = record(tf.subscribe("S"));
    await until(() => s.subscribed.length, 5000, "subscribed");
    proxy.stall();
    const pad = "x".repeat(4000);
    const count = 3000;
    const body = Array.from({ length: count }, (_, i) => JSON.stringify({ topic: "S", data: { i, pad } })).join("\n");
    const res = await fetch(`${broker.url}/publish`, { method: "POST", body });
    assert.equal(res.status, 202, await res.text());
    proxy.thaw();
    let total = count;
    if (heartbeatMs > 5000) {
      await until(() => s.seqs.length > 0, 5000, "the ticks that were queued");
      await broker.publish("S", "after");
      total += 1;
    }
    await until(() => s.seqs.length === total, 10000, `all ${total} ticks`).catch((e) => {
      throw new Error(`${e.message}: have ${s.seqs.length}, subscribed ${JSON.stringify(s.subscribed)}, gaps ${JSON.stringify(s.gaps)}, state ${JSON.stringify(tf.state)}`);
    });
    assert.deepEqual(s.seqs, range(1, total));
    assert.deepEqual(s.gaps, []);
    assert.ok(s.subscribed.length >= 2 && s.subscribed.at(-1).recovered, JSON.stringify(s.subscribed));
    const metrics = await until(async () => {
      const text = await (await fetch(`${broker.url}/metrics`)).text();
      return /tickfan_slow_consumer_actions_total\{policy="drop"\} [1-9]/.test(text) && text;
    }, 5000, "the drop counted");
    assert.ok(metrics);
  });
}

/** A free loopback port (bound, then released). */
async function freePort() {
  const server = net.createServer();
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address();
  await new Promise((r) => server.close(r));
  return port;
}

/** nats-server with JetStream on a free port, or null (skipped) outside CI when it is missing. */
async function natsServer() {
  const bin = process.env.NATS_SERVER ?? ["/usr/sbin/nats-server", "/usr/bin/nats-server"].find((p) => existsSync(p));
  if (!bin) {
    if (process.env.CI) throw new Error("nats-server is not installed (scripts/install-test-deps.sh installs it)");
    return null;
  }
  const port = await freePort();
  const dir = mkdtempSync(path.join(tmpdir(), "tickfan-js-nats-"));
  const child = spawn(bin, ["-a", "127.0.0.1", "-p", String(port), "-js", "-sd", dir], { stdio: "ignore" });
  cleanups.push(async () => {
    if (child.exitCode === null) {
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGKILL");
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  });
  await until(
    () => new Promise((r) => net.connect(port, "127.0.0.1").once("connect", function () { this.destroy(); r(true); }).once("error", () => r(false))),
    10000,
    "nats-server listening",
  );
  return `nats://127.0.0.1:${port}`;
}

test("cluster ticks: seqs are the stream's, and prev, not seq - 1, tells a gap", async (t) => {
  const nats = await natsServer();
  if (!nats) return t.skip("nats-server not found");
  const { broker, proxy } = await setup(["--cluster-nats", nats]);
  const tf = client(proxy.url);
  const a = record(tf.subscribe("A"));
  const b = record(tf.subscribe("B"));
  await until(() => a.subscribed.length && b.subscribed.length, 10000, "subscribed");
  // Interleaved topics: each topic's seqs jump by two in the one stream.
  for (let i = 0; i < 10; i++) {
    await broker.publish("A", { i });
    await broker.publish("B", { i });
  }
  await until(() => a.ticks.length === 10 && b.ticks.length === 10, 10000, "20 cluster ticks");
  for (const r of [a, b]) {
    assert.deepEqual(r.gaps, [], "non-contiguous seqs with a complete prev chain are no gap");
    assert.equal(r.subscribed.length, 1, "and no resubscribe to fetch missing ticks");
    for (let i = 1; i < r.ticks.length; i++) {
      assert.equal(r.ticks[i].prev, r.ticks[i - 1].seq);
      assert.ok(r.ticks[i].seq > r.ticks[i - 1].seq + 1, "seqs of one topic are not contiguous here");
    }
  }
  assert.deepEqual(a.ticks.map((x) => x.data.i), range(0, 9));
});
