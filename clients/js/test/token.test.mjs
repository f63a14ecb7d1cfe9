// The JavaScript client's getToken() against the real broker with per-user
// JWTs that live 3 s (no leeway, `token_expiring` 2 s before the end):
// over a WebSocket the fresh token is sent in-band, over SSE the stream
// is reopened with it, and a long-poll asks for one before a request whose
// token would be expired, so ticks keep coming past several expiries with
// no gap, no duplicate and no reconnect; a client whose getToken keeps
// handing out the expired token is closed with 4001 and asks again.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import WebSocket from "ws";
import { Tickfan } from "../dist/tickfan.mjs";
import { Broker, until, record, recordStates } from "./harness.mjs";

const SECRET = "js-client-test-secret-0123456789abcdef";
const cleanups = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

const b64url = (v) => Buffer.from(typeof v === "string" ? v : JSON.stringify(v)).toString("base64url");

/** An HS256 JWT for `sub`, expiring `ttlSecs` from now, allowed `topics`. */
function sign(sub, ttlSecs, topics) {
  const head = b64url({ alg: "HS256", typ: "JWT" });
  const body = b64url({ sub, exp: Math.floor(Date.now() / 1000) + ttlSecs, "tf.sub": topics });
  const mac = createHmac("sha256", SECRET).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${mac}`;
}

async function jwtBroker() {
  const broker = await Broker.start([
    "--set", "jwt.algorithm=HS256",
    "--set", `jwt.hmac_secret=${SECRET}`,
    "--set", "jwt.leeway_secs=0",
    "--set", "jwt.expiry_warning_secs=2",
    "--set", "auth.subscribe_requires_token=true",
  ]);
  cleanups.push(() => broker.stop());
  return broker;
}

function client(broker, opts) {
  const tf = new Tickfan(broker.url, { WebSocket, watchPage: false, backoff: { initialMs: 40, maxMs: 300 }, ...opts });
  cleanups.push(() => tf.close());
  return tf;
}

/** Publishes one tick every 20 ms until `ms` pass; returns how many. */
async function publishFor(broker, topic, ms) {
  const end = Date.now() + ms;
  let n = 0;
  while (Date.now() < end) {
    await broker.publish(topic, { n: ++n });
    await new Promise((r) => setTimeout(r, 20)); // pacing the feed, not synchronising
  }
  return n;
}

for (const transport of ["websocket", "sse", "poll"]) {
  test(`getToken refreshes before expiry over ${transport}: no gap, no reconnect`, async () => {
    const broker = await jwtBroker();
    let calls = 0;
    const tf = client(broker, {
      transports: [transport],
      pollTimeoutSecs: 1,
      getToken: async () => {
        calls++;
        return sign("alice", 3, ["prices.>"]);
      },
    });
    const states = recordStates(tf);
    const sub = record(tf.subscribe("prices.AAPL"));
    await until(() => sub.subscribed.length && tf.state.state === "connected", 10000, "subscribed");
    // Over 7 s the first token and at least one refreshed one expire.
    const published = await publishFor(broker, "prices.AAPL", 7000);
    await until(() => sub.seqs.length >= published, 10000, `all ${published} ticks`);
    assert.deepEqual(sub.seqs, Array.from({ length: published }, (_, i) => i + 1), "no gap, no duplicate");
    assert.deepEqual(sub.gaps, []);
    assert.ok(calls >= 3, `getToken was asked again before each expiry (${calls} calls)`);
    assert.deepEqual(
      states.filter((s) => s.state === "disconnected"),
      [],
      "the connection was never lost",
    );
    assert.ok(!broker.stderr().includes(SECRET));
  });
}

test("a token that is not refreshed ends the WebSocket with 4001, and getToken is asked again", async () => {
  const broker = await jwtBroker();
  const staleExp = Math.floor(Date.now() / 1000) + 2;
  const stale = sign("bob", 2, ["prices.>"]);
  let calls = 0;
  const tf = client(broker, {
    transports: ["websocket"],
    // Until it expires, the same token: the refresh extends nothing.
    getToken: () => {
      calls++;
      return Date.now() < staleExp * 1000 ? stale : sign("bob", 600, ["prices.>"]);
    },
  });
  const states = recordStates(tf);
  const sub = record(tf.subscribe("prices.AAPL"));
  await until(() => states.some((s) => s.state === "disconnected" && /4001/.test(s.reason ?? "")), 10000, "close 4001");
  await until(() => tf.state.state === "connected" && sub.subscribed.length >= 2, 10000, "reconnected with a fresh token");
  assert.ok(calls >= 3, `getToken asked at the start, on the warning and after the close (${calls})`);
});
