// What the client tests run against: the real broker binary (started on
// port 0, its address read from --ready-file) and a TCP proxy between the
// client and the broker that the test controls: it can cut every
// connection, refuse new ones (an outage), refuse WebSocket upgrades or
// SSE requests as a meddling proxy would, and point at a new broker (a
// restart, on another port).
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, existsSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
/** The broker binary: $TICKFAN_BIN, else the debug build `cargo build` makes. */
export const BIN = process.env.TICKFAN_BIN ?? path.resolve(here, "../../../target/debug/tickfan");

/** Polls `check` until it returns a truthy value or `ms` pass; deadlines, not sleeps. */
export async function until(check, ms = 10000, what = "condition") {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A broker process on 127.0.0.1 and a random port. */
export class Broker {
  static async start(args = []) {
    const dir = mkdtempSync(path.join(tmpdir(), "tickfan-js-"));
    const ready = path.join(dir, "ready");
    const child = spawn(BIN, ["--listen", "127.0.0.1:0", "--workers", "1", "--ready-file", ready, "--log-level", "warn", ...args], {
      stdio: ["ignore", "ignore", "pipe"],
    });
    let stderr = "";
    child.stderr.on("data", (d) => (stderr += d));
    await until(() => existsSync(ready) || child.exitCode !== null, 15000, "the broker's ready file");
    if (child.exitCode !== null) throw new Error(`broker exited: ${stderr}`);
    const addr = readFileSync(ready, "utf8").split("\n")[0].trim();
    const b = new Broker();
    Object.assign(b, { child, dir, addr, port: Number(addr.split(":").pop()), stderr: () => stderr });
    return b;
  }
  get url() {
    return `http://${this.addr}`;
  }
  async publish(topic, data) {
    const res = await fetch(`${this.url}/publish?topic=${encodeURIComponent(topic)}`, { method: "POST", body: JSON.stringify(data) });
    if (res.status !== 202) throw new Error(`publish ${res.status}`);
    return (await res.json()).seq;
  }
  async stop() {
    if (this.child.exitCode === null) {
      const exited = new Promise((r) => this.child.once("exit", r));
      this.child.kill("SIGKILL");
      await exited;
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A TCP proxy in front of a broker. */
export class Proxy {
  constructor(targetPort) {
    this.targetPort = targetPort;
    this.sockets = new Set();
    this.frozen = new Set();
    this.down = false;
    this.refuseWebSocket = false;
    this.refuseSse = false;
    /** First request lines seen, e.g. "GET /sse?topic=A HTTP/1.1". */
    this.requests = [];
    this.server = net.createServer((client) => this.accept(client));
  }
  static async start(targetPort) {
    const p = new Proxy(targetPort);
    await new Promise((r) => p.server.listen(0, "127.0.0.1", r));
    p.port = p.server.address().port;
    return p;
  }
  get url() {
    return `http://127.0.0.1:${this.port}`;
  }
  accept(client) {
    if (this.down) return client.destroy();
    this.sockets.add(client);
    client.on("close", () => this.sockets.delete(client));
    client.on("error", () => {});
    let head = Buffer.alloc(0);
    const onData = (chunk) => {
      head = Buffer.concat([head, chunk]);
      if (head.indexOf("\r\n\r\n") < 0 && head.length < 16384) return;
      client.off("data", onData);
      client.pause();
      const text = head.toString("latin1");
      this.requests.push(text.split("\r\n")[0]);
      const upgrade = /^upgrade:\s*websocket/im.test(text);
      const sse = /^GET \/sse[?\s]/.test(text);
      if ((upgrade && this.refuseWebSocket) || (sse && this.refuseSse)) {
        client.end("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
      }
      const upstream = net.connect(this.targetPort, "127.0.0.1");
      this.sockets.add(upstream);
      upstream.on("close", () => {
        this.sockets.delete(upstream);
        client.destroy();
      });
      upstream.on("error", () => client.destroy());
      client.on("close", () => upstream.destroy());
      upstream.write(head);
      client.pipe(upstream);
      upstream.pipe(client);
      client.resume();
    };
    client.on("data", onData);
  }
  /** Stops forwarding on every open connection, leaving them open: silence. */
  freeze() {
    for (const s of this.sockets) {
      s.unpipe();
      s.pause();
      this.frozen.add(s);
    }
    this.sockets.clear();
  }
  /** Stops reading from the broker on every open connection (it sees a slow consumer); `thaw` resumes. */
  stall() {
    this.stalled = [];
    for (const s of this.sockets) {
      if (s.remotePort === this.targetPort) {
        s.pause();
        this.stalled.push(s);
      }
    }
  }
  thaw() {
    for (const s of this.stalled ?? []) s.resume();
    this.stalled = [];
  }

  /** Closes the connections `freeze` left open. */
  dropFrozen() {
    for (const s of this.frozen) s.destroy();
    this.frozen.clear();
  }
  /** Cuts every open connection (both sides) at once. */
  cut() {
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
  }
  async close() {
    this.cut();
    this.dropFrozen();
    await new Promise((r) => this.server.close(r));
  }
}

/** Collects what a subscription emits. */
export function record(sub) {
  const r = { ticks: [], seqs: [], gaps: [], subscribed: [], errors: [] };
  sub.on("tick", (t) => {
    r.ticks.push(t);
    r.seqs.push(t.seq);
  });
  sub.on("gap", (g) => r.gaps.push(g));
  sub.on("subscribed", (s) => r.subscribed.push(s));
  sub.on("error", (e) => r.errors.push(e));
  return r;
}

/** Records the client's state changes. */
export function recordStates(tf) {
  const states = [];
  tf.on("state", (s) => states.push(s));
  return states;
}

/** 1..=n */
export const range = (a, b) => Array.from({ length: b - a + 1 }, (_, i) => a + i);
