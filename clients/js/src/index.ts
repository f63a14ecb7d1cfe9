// The tickfan client: one connection to a tickfan broker, over WebSocket,
// Server-Sent Events or long-polling, that keeps every subscription in
// order across reconnects. The broker numbers each topic's ticks (seq) and
// names the numbering (epoch); after a reconnect each subscription asks for
// the ticks after the last one it delivered (`since` + `epoch`), so the
// application sees neither a gap nor a duplicate when the broker's history
// still holds them, and a `gap` (or a `subscribed` that says it did not
// recover) when it does not.
//
// No runtime dependencies: WebSocket and fetch are the platform's (Node 20
// has fetch but no global WebSocket: pass one, e.g. the `ws` package, as
// the `WebSocket` option).

/** The ways to reach the broker, in the order they are tried by default. */
export type TransportName = "websocket" | "sse" | "poll";

/** A tick as the broker sends it. */
export interface Tick<T = unknown> {
  topic: string;
  seq: number;
  /**
   * The seq of the topic's previous tick, sent by cluster nodes (whose seqs
   * are stream sequences, not contiguous); absent from a single node, where
   * it is always `seq - 1`.
   */
  prev?: number;
  /** The broker's receive time, microseconds since the Unix epoch. */
  ts: number;
  data: T;
}

/** What `subscribed` tells: where the topic is, and what a resume got. */
export interface SubscribedEvent {
  topic: string;
  seq: number;
  epoch: string;
  /** This subscribe resumed after earlier ticks (`since` was sent). */
  resumed: boolean;
  /** A resume that got every tick it missed: no gap, same numbering. */
  recovered: boolean;
}

export interface GapEvent {
  topic: string;
  /** Ticks `from..=to` are lost (they left the broker's history). */
  from: number;
  to: number;
}

export interface ErrorEvent {
  code: string;
  message: string;
  topic?: string;
}

export type ConnectionState = "connecting" | "connected" | "disconnected" | "closed";

export interface StateEvent {
  state: ConnectionState;
  transport: TransportName;
  /** Failed attempts since the connection was last stable. */
  attempt: number;
  /** When `disconnected`: the wall-clock time (ms) of the next attempt. */
  retryAt?: number;
  /** When `disconnected`: the delay chosen for the next attempt (ms). */
  retryInMs?: number;
  /** Why the connection ended, when it did. */
  reason?: string;
}

/** A WebSocket constructor: the browser's, Node 22's, or `ws`'s. */
export interface WebSocketLike {
  readyState: number;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code?: number; reason?: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}
export type WebSocketCtor = new (url: string, protocols?: string | string[]) => WebSocketLike;

export interface BackoffOptions {
  /** First retry's upper bound, ms (default 500). */
  initialMs?: number;
  /** Largest upper bound, ms (default 20000). */
  maxMs?: number;
  /** Connected this long (ms), the next failure starts from `initialMs` again (default 10000). */
  stableMs?: number;
}

export interface TickfanOptions {
  /** Sent as `?token=` (WebSocket) or `Authorization: Bearer` (HTTP). */
  token?: string;
  /**
   * Per-user tokens (JWTs) that expire: called for a fresh token before each
   * connection, and when the broker says the token expires soon
   * (`token_expiring`). On a WebSocket the fresh token is sent in-band
   * (`{"op":"auth"}`), so the stream goes on; an SSE stream is reopened with
   * it from its cursors; a long-poll uses it from its next request. On the
   * WebSocket the token travels as a `tickfan.token.<jwt>` subprotocol
   * entry (browsers cannot set headers there). Takes precedence over `token`.
   */
  getToken?: () => string | Promise<string>;
  /** Tried in order; once one connects it is kept (default all three). */
  transports?: TransportName[];
  /** Failed attempts on one transport before the next is tried (default 2). */
  attemptsPerTransport?: number;
  backoff?: BackoffOptions;
  /** No message for this long (ms, wall clock) on a connection with subscriptions: it is dead (default 15000, three heartbeats). */
  livenessMs?: number;
  /** An attempt that has not connected after this long (ms) failed (default 10000). */
  connectTimeoutMs?: number;
  /** Long-poll hold asked of the broker, seconds (default 25). */
  pollTimeoutSecs?: number;
  /** The WebSocket path (default "/ws"). */
  wsPath?: string;
  WebSocket?: WebSocketCtor;
  fetch?: typeof fetch;
  /** A random number in [0, 1) for the jitter (tests pin it). */
  random?: () => number;
  /** Hook the page's online/offline/visibility events (default: when there is a window). */
  watchPage?: boolean;
}

/** The delay before retry number `attempt` (0 first): full jitter, a uniform draw below the exponential bound. */
export function backoffDelay(attempt: number, opts: BackoffOptions = {}, random: () => number = Math.random): number {
  return random() * backoffCap(attempt, opts);
}

/** The upper bound of [`backoffDelay`]: `initialMs * 2^attempt`, at most `maxMs`. */
export function backoffCap(attempt: number, opts: BackoffOptions = {}): number {
  const initial = opts.initialMs ?? 500;
  const max = opts.maxMs ?? 20000;
  return Math.min(max, initial * Math.pow(2, Math.min(attempt, 30)));
}

type Listener = (arg: any) => void;

/** A minimal event emitter; a listener that throws does not stop the others. */
class Emitter<Events> {
  private listeners = new Map<string, Listener[]>();
  on<K extends keyof Events & string>(name: K, fn: (arg: Events[K]) => void): () => void {
    const list = this.listeners.get(name) ?? [];
    list.push(fn);
    this.listeners.set(name, list);
    return () => this.off(name, fn);
  }
  off<K extends keyof Events & string>(name: K, fn: (arg: Events[K]) => void): void {
    const list = this.listeners.get(name);
    if (list) this.listeners.set(name, list.filter((l) => l !== fn));
  }
  protected emit<K extends keyof Events & string>(name: K, arg: Events[K]): void {
    for (const fn of this.listeners.get(name) ?? []) {
      try {
        fn(arg);
      } catch (e) {
        setTimeout(() => {
          throw e;
        });
      }
    }
  }
}

export interface SubscriptionEvents<T> {
  subscribed: SubscribedEvent;
  tick: Tick<T>;
  gap: GapEvent;
  error: ErrorEvent;
}

export interface SubscribeOptions {
  /** At most this many ticks per second; the newest wins (WebSocket; SSE when every subscription asks the same). */
  maxHz?: number;
}

/** One topic's subscription: its events, and where it is in the topic. */
export class Subscription<T = unknown> extends Emitter<SubscriptionEvents<T>> {
  /** The seq of the last tick delivered, if any. */
  lastSeq?: number;
  /** The seq the broker announced in `subscribed` (resume point before the first tick). */
  subscribedSeq?: number;
  epoch?: string;
  /** A resume sent with `since`, waiting to learn whether it recovered. */
  private pendingResume?: { since: number; event: SubscribedEvent };
  /** The `since` of the subscribe in flight, on this connection. */
  private sentSince?: number;
  private announced = false;

  constructor(
    readonly topic: string,
    readonly options: SubscribeOptions,
    private readonly owner: Tickfan,
  ) {
    super();
  }

  /** Stops this subscription. */
  unsubscribe(): void {
    this.owner._unsubscribe(this);
  }

  /** Where to resume: the last delivered tick, else the announced seq. */
  _since(): number | undefined {
    return this.lastSeq ?? this.subscribedSeq;
  }

  /** Whether the resume point counts ticks, so that its epoch matters. */
  _hasSeqs(): boolean {
    return (this._since() ?? 0) > 0;
  }

  /** A new connection starts: the next `subscribed` answers this subscribe. */
  _connecting(): void {
    this.resyncing = false;
    this.sentSince = this._since();
    this.announced = false;
    this.pendingResume = undefined;
  }

  /** The broker's `subscribed` (or, over long-poll, the first answer). */
  _onSubscribed(seq: number, epoch: string, gapFollows?: boolean): void {
    this.resyncing = false;
    const since = this.sentSince;
    const resumed = since !== undefined;
    // Before any tick there are no seqs to confuse: a topic nobody has
    // published to gets a new epoch each time it is made (a long-poll makes
    // it anew per request), and that changes nothing for the client.
    const sameEpoch = this.epoch === undefined || this.epoch === epoch || !this._hasSeqs();
    const event: SubscribedEvent = { topic: this.topic, seq, epoch, resumed, recovered: false };
    if (!sameEpoch) {
      // Another numbering: the old seqs mean nothing; start over.
      this.lastSeq = undefined;
    }
    this.epoch = epoch;
    this.subscribedSeq = seq;
    this.announced = true;
    if (!resumed || !sameEpoch) {
      this.emit("subscribed", event);
    } else if (gapFollows !== undefined) {
      event.recovered = !gapFollows;
      this.emit("subscribed", event);
    } else if (seq <= since) {
      event.recovered = seq === since;
      this.emit("subscribed", event);
    } else {
      // Missed ticks follow, or a gap: the next message says which.
      this.pendingResume = { since, event };
    }
  }

  private settle(recovered: boolean): void {
    const pending = this.pendingResume;
    if (!pending) return;
    this.pendingResume = undefined;
    pending.event.recovered = recovered;
    this.emit("subscribed", pending.event);
  }

  _onGap(from: number, to: number): void {
    if (this.resyncing) return;
    this.settle(false);
    if (this.lastSeq !== undefined && to > this.lastSeq) this.lastSeq = to;
    this.emit("gap", { topic: this.topic, from, to });
  }

  _onTick(tick: Tick<T>): void {
    if (this.resyncing) return; // the replay after the resubscribe brings it
    this.settle(true);
    const last = this.lastSeq;
    if (last !== undefined && tick.seq <= last) return; // a duplicate of a replay
    // The tick that should have come before this one: `prev` when the
    // broker sends it (a cluster), else the seq before (a single node).
    const before = typeof tick.prev === "number" ? tick.prev : tick.seq - 1;
    if (last !== undefined && before > last && this.options.maxHz === undefined && this.announced) {
      // The broker skipped ticks (a slow-consumer policy): fetch them from
      // its history if the link can, else say they are lost.
      if (this.owner._resync(this)) return;
      this.emit("gap", { topic: this.topic, from: last + 1, to: before });
    }
    this.lastSeq = tick.seq;
    this.emit("tick", tick);
  }

  /** Set while a resubscribe (after skipped ticks) is in flight: ticks wait for its replay. */
  resyncing = false;
  private lastResync = 0;

  /** Whether a resync may start now: at most one a second, so an overloaded link degrades to gaps. */
  _mayResync(): boolean {
    if (this.resyncing || this.pendingResume || !this.announced || Date.now() - this.lastResync < 1000) return false;
    this.lastResync = Date.now();
    return true;
  }

  /** A heartbeat told the topic's seq: ticks after ours that never came were skipped. */
  _onHeartbeat(seq: number): boolean {
    const mine = this._since();
    return mine !== undefined && seq > mine && this.options.maxHz === undefined && this.owner._resync(this);
  }

  _onError(error: ErrorEvent): void {
    this.emit("error", error);
  }
}

export interface TickfanEvents {
  state: StateEvent;
  error: ErrorEvent;
}

/** One live transport connection. */
interface Link {
  /** Sends a new subscription (WebSocket), or restarts the request with it (SSE, poll). */
  subscribe(sub: Subscription): void;
  unsubscribe(sub: Subscription): void;
  publish?(topic: string, data: unknown): boolean;
  /** Unsubscribes and subscribes again from the subscription's last tick. */
  resync?(sub: Subscription): void;
  /** Puts the fresh token to use (in-band `auth`, or a reopened stream). */
  refresh?(): void;
  close(): void;
}

/** How a link reports back; every call from a link that is no longer current is ignored. */
interface LinkHost {
  opened(): void;
  activity(): void;
  message(msg: any): void;
  ended(reason: string): void;
}

const WS_OPEN = 1;

/** A tickfan broker connection with reconnect, recovery and fallback. */
export class Tickfan extends Emitter<TickfanEvents> {
  private readonly base: URL;
  private readonly opts: TickfanOptions;
  private readonly transports: TransportName[];
  private readonly subs = new Map<string, Subscription<any>>();
  private transportIndex = 0;
  /** A transport connected once: it is kept from then on. */
  private sticky = false;
  private failuresOnTransport = 0;
  private attempt = 0;
  private link?: Link;
  private linkId = 0;
  private connected = false;
  private connectedAt = 0;
  private lastActivity = 0;
  private retryTimer?: ReturnType<typeof setTimeout>;
  private connectTimer?: ReturnType<typeof setTimeout>;
  private watchdog?: ReturnType<typeof setInterval>;
  private offline = false;
  private closed = false;
  private unwatch: Array<() => void> = [];
  /** The last token `getToken` gave, and whether a fresh one is wanted. */
  private token?: string;
  private tokenStale = true;
  /** The current state, as last emitted. */
  state: StateEvent;

  constructor(url: string, opts: TickfanOptions = {}) {
    super();
    const base = new URL(url, (globalThis as any).location?.href);
    base.protocol = base.protocol.replace(/^ws/, "http");
    this.base = base;
    this.opts = opts;
    this.transports = opts.transports?.length ? opts.transports : ["websocket", "sse", "poll"];
    this.state = { state: "connecting", transport: this.transports[0], attempt: 0 };
    this.watchdog = setInterval(() => this.checkLiveness(), 1000);
    (this.watchdog as any).unref?.();
    if (opts.watchPage ?? typeof window !== "undefined") this.watchPage();
    queueMicrotask(() => this.connect());
  }

  /** The transport in use (or being tried). */
  get transport(): TransportName {
    return this.transports[this.transportIndex];
  }

  /** Subscribes to `topic`; one subscription per topic per client. */
  subscribe<T = unknown>(topic: string, options: SubscribeOptions = {}): Subscription<T> {
    const existing = this.subs.get(topic);
    if (existing) return existing;
    const sub = new Subscription<T>(topic, options, this);
    this.subs.set(topic, sub);
    sub._connecting();
    // Also while connecting: an SSE stream or a poll already on its way
    // was asked without this topic.
    this.link?.subscribe(sub);
    return sub;
  }

  /**
   * Subscribes `sub` again from its last tick, on the open WebSocket, to
   * replay ticks the broker skipped for this connection (a `drop` or
   * `conflate` slow-consumer policy); false when that cannot be done now.
   */
  _resync(sub: Subscription<any>): boolean {
    if (!this.connected || !this.link?.resync || !sub._mayResync()) return false;
    sub._connecting();
    sub.resyncing = true;
    this.link.resync(sub);
    return true;
  }

  _unsubscribe(sub: Subscription<any>): void {
    if (this.subs.get(sub.topic) !== sub) return;
    this.subs.delete(sub.topic);
    this.link?.unsubscribe(sub);
  }

  /**
   * Publishes `data` (any JSON) to `topic`: over the WebSocket when it is
   * open (resolves once sent), else `POST /publish` (resolves with the seq).
   */
  async publish(topic: string, data: unknown): Promise<{ seq?: number }> {
    if (this.connected && this.link?.publish?.(topic, data)) return {};
    const res = await this.fetchFn()(this.url("/publish", { topic }), {
      method: "POST",
      headers: { "Content-Type": "application/json", ...this.authHeader() },
      body: JSON.stringify(data),
    });
    if (res.status !== 202) throw new Error(`publish: ${res.status} ${await res.text()}`);
    return (await res.json()) as { seq: number };
  }

  /** Drops the connection now (as a network failure would) and reconnects with backoff. */
  drop(): void {
    this.linkEnded(this.linkId, "dropped by the application");
  }

  /** Reconnects at once on `transport` (and keeps it). */
  useTransport(transport: TransportName): void {
    const index = this.transports.indexOf(transport);
    if (index < 0) throw new Error(`transport ${transport} is not in the list`);
    this.transportIndex = index;
    this.sticky = true;
    this.failuresOnTransport = 0;
    this.reconnectNow("switching to " + transport);
  }

  /** Closes for good: no more events, no reconnect. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.stopLink();
    clearTimeout(this.retryTimer);
    clearInterval(this.watchdog);
    for (const undo of this.unwatch) undo();
    this.setState({ state: "closed", transport: this.transport, attempt: this.attempt });
  }

  // ---- connection lifecycle ----

  private setState(state: StateEvent): void {
    this.state = state;
    this.emit("state", state);
  }

  private connect(): void {
    if (this.closed || this.offline) return;
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this.stopLink();
    const id = ++this.linkId;
    this.connected = false;
    this.setState({ state: "connecting", transport: this.transport, attempt: this.attempt });
    for (const sub of this.subs.values()) sub._connecting();
    const host: LinkHost = {
      opened: () => id === this.linkId && this.linkOpened(),
      activity: () => {
        if (id === this.linkId) this.lastActivity = Date.now();
      },
      message: (msg) => id === this.linkId && this.onMessage(msg),
      ended: (reason) => this.linkEnded(id, reason),
    };
    this.lastActivity = Date.now();
    this.connectTimer = setTimeout(() => this.linkEnded(id, "connect timeout"), this.opts.connectTimeoutMs ?? 10000);
    const open = () => {
      if (id !== this.linkId) return;
      try {
        const t = this.transport;
        this.link = t === "websocket" ? this.openWebSocket(host) : t === "sse" ? this.openSse(host) : this.openPoll(host);
      } catch (e) {
        queueMicrotask(() => this.linkEnded(id, String(e)));
      }
    };
    if (!this.opts.getToken) return open();
    this.currentToken().then(open, (e) => this.linkEnded(id, `getToken: ${e?.message ?? e}`));
  }

  /** The token to present: `getToken`'s (a fresh one when the last is stale), else `token`. */
  private async currentToken(): Promise<string | undefined> {
    if (!this.opts.getToken) return this.opts.token;
    if (this.tokenStale || this.token === undefined) {
      this.token = await this.opts.getToken();
      this.tokenStale = false;
    }
    return this.token;
  }

  /**
   * Whether the token `getToken` gave ends within `ms` (read from a JWT's
   * `exp`; a token that is no JWT never does): a long-poll, which hears no
   * `token_expiring`, asks for a fresh one before a request that would
   * present an expired token.
   */
  private tokenEndsWithin(ms: number): boolean {
    const payload = this.token?.split(".")[1];
    if (!payload) return false;
    try {
      const json = atob(payload.replace(/-/g, "+").replace(/_/g, "/"));
      const exp = JSON.parse(json).exp;
      return typeof exp === "number" && exp * 1000 - Date.now() < ms;
    } catch {
      return false;
    }
  }

  /** The token last obtained (or configured), for a request made now. */
  private presentedToken(): string | undefined {
    return this.opts.getToken ? this.token : this.opts.token;
  }

  /** The broker says the token expires soon: get a fresh one onto the link. */
  private refreshToken(): void {
    if (!this.opts.getToken) return;
    this.tokenStale = true;
    const id = this.linkId;
    this.currentToken().then(
      () => id === this.linkId && this.link?.refresh?.(),
      (e) => this.emit("error", { code: "token_refresh_failed", message: String(e?.message ?? e) }),
    );
  }

  private linkOpened(): void {
    clearTimeout(this.connectTimer);
    this.connected = true;
    this.connectedAt = Date.now();
    this.lastActivity = Date.now();
    this.sticky = true;
    this.failuresOnTransport = 0;
    this.setState({ state: "connected", transport: this.transport, attempt: this.attempt });
  }

  private stopLink(): void {
    clearTimeout(this.connectTimer);
    const link = this.link;
    this.link = undefined;
    this.linkId++;
    try {
      link?.close();
    } catch {
      /* already gone */
    }
  }

  private linkEnded(id: number, reason: string): void {
    if (id !== this.linkId || this.closed) return;
    // An expired or refused token (close 4001, a 401) is not fixed by
    // presenting it again: every reconnect asks getToken afresh.
    this.tokenStale = true;
    const wasConnected = this.connected;
    this.connected = false;
    this.stopLink();
    if (wasConnected && Date.now() - this.connectedAt >= (this.opts.backoff?.stableMs ?? 10000)) {
      this.attempt = 0;
    }
    if (!wasConnected && !this.sticky) {
      this.failuresOnTransport++;
      if (this.failuresOnTransport >= (this.opts.attemptsPerTransport ?? 2) && this.transportIndex < this.transports.length - 1) {
        this.transportIndex++;
        this.failuresOnTransport = 0;
      }
    }
    if (this.offline) {
      this.setState({ state: "disconnected", transport: this.transport, attempt: this.attempt, reason });
      return;
    }
    const delay = backoffDelay(this.attempt, this.opts.backoff, this.opts.random);
    this.attempt++;
    const retryAt = Date.now() + delay;
    this.setState({ state: "disconnected", transport: this.transport, attempt: this.attempt, retryAt, retryInMs: delay, reason });
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  /** Replaces the connection at once, without counting a failure. */
  private reconnectNow(reason: string): void {
    if (this.closed) return;
    this.stopLink();
    this.connected = false;
    this.setState({ state: "disconnected", transport: this.transport, attempt: this.attempt, reason });
    this.connect();
  }

  /** Timers are throttled in background tabs, so silence is measured on the wall clock. */
  private checkLiveness(): void {
    // A held long-poll is silent by design; its own request timeout watches it.
    if (!this.connected || this.subs.size === 0 || this.transport === "poll") return;
    if (Date.now() - this.lastActivity > (this.opts.livenessMs ?? 15000)) {
      this.linkEnded(this.linkId, "no heartbeat");
    }
  }

  private watchPage(): void {
    const w = globalThis as any;
    const listen = (target: any, name: string, fn: () => void) => {
      if (!target?.addEventListener) return;
      target.addEventListener(name, fn);
      this.unwatch.push(() => target.removeEventListener(name, fn));
    };
    // Quiet for a third of the liveness limit (one heartbeat interval by
    // default): after a sleep or a background spell, do not wait for the
    // rest of it, whose timer may have been throttled anyway.
    const quietMs = () => (this.opts.livenessMs ?? 15000) / 3;
    const wake = () => {
      if (this.closed || this.offline) return;
      if (!this.connected) this.connect();
      else if (Date.now() - this.lastActivity > quietMs()) this.reconnectNow("quiet after the page woke");
    };
    listen(w, "online", () => {
      this.offline = false;
      this.attempt = 0;
      if (!this.connected) this.connect();
    });
    listen(w, "offline", () => {
      this.offline = true;
      clearTimeout(this.retryTimer);
      if (this.link) this.linkEnded(this.linkId, "offline");
      else this.setState({ state: "disconnected", transport: this.transport, attempt: this.attempt, reason: "offline" });
    });
    listen(w, "pageshow", wake);
    listen(w.document, "visibilitychange", () => {
      if (w.document.visibilityState === "visible") wake();
    });
  }

  // ---- messages, whatever the transport ----

  private onMessage(msg: any): void {
    this.lastActivity = Date.now();
    if (msg === null || typeof msg !== "object") return;
    const sub = typeof msg.topic === "string" ? this.subs.get(msg.topic) : undefined;
    switch (msg.event) {
      case undefined:
        if (sub && typeof msg.seq === "number") sub._onTick(msg as Tick);
        return;
      case "subscribed":
        sub?._onSubscribed(msg.seq, msg.epoch);
        return;
      case "gap":
        sub?._onGap(msg.from, msg.to);
        return;
      case "error": {
        const error: ErrorEvent = { code: msg.code, message: msg.message, topic: msg.topic };
        if (sub) sub._onError(error);
        else this.emit("error", error);
        return;
      }
      case "heartbeat":
        for (const [topic, seq] of Object.entries(msg.seqs ?? {})) {
          if (typeof seq === "number") this.subs.get(topic)?._onHeartbeat(seq);
        }
        return;
      case "token_expiring":
        this.refreshToken();
        return;
      default:
        return; // unsubscribed: liveness only
    }
  }

  // ---- transports ----

  private url(path: string, params: Record<string, string | undefined> = {}): string {
    const u = new URL(path, this.base);
    for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== "") u.searchParams.set(k, v);
    return u.toString();
  }

  private authHeader(): Record<string, string> {
    const token = this.presentedToken();
    return token ? { Authorization: `Bearer ${token}` } : {};
  }

  private fetchFn(): typeof fetch {
    const f = this.opts.fetch ?? (globalThis as any).fetch;
    if (!f) throw new Error("no fetch: pass the fetch option");
    return f;
  }

  private subOp(sub: Subscription<any>): string {
    const op: Record<string, unknown> = { op: "sub", topic: sub.topic };
    const since = sub._since();
    if (since !== undefined) {
      op.since = since;
      if (sub.epoch && sub._hasSeqs()) op.epoch = sub.epoch;
    }
    if (sub.options.maxHz !== undefined) op.max_hz = sub.options.maxHz;
    return JSON.stringify(op);
  }

  private openWebSocket(host: LinkHost): Link {
    const Ctor: WebSocketCtor | undefined = this.opts.WebSocket ?? (globalThis as any).WebSocket;
    if (!Ctor) throw new Error("no WebSocket: pass the WebSocket option");
    const u = new URL(this.opts.wsPath ?? "/ws", this.base);
    u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
    const token = this.presentedToken();
    const protocols = ["tickfan.v1"];
    // A JWT fits a subprotocol entry (kept out of URLs and their logs);
    // a static token with + / = does not, and goes as ?token=.
    if (token && this.opts.getToken && /^[A-Za-z0-9._~-]+$/.test(token)) protocols.push(`tickfan.token.${token}`);
    else if (token) u.searchParams.set("token", token);
    const ws = new Ctor(u.toString(), protocols.length === 1 ? protocols[0] : protocols);
    ws.onopen = () => {
      host.opened();
      for (const sub of this.subs.values()) ws.send(this.subOp(sub));
    };
    ws.onmessage = (ev) => {
      host.activity();
      let msg: unknown;
      try {
        msg = JSON.parse(typeof ev.data === "string" ? ev.data : String(ev.data));
      } catch {
        return;
      }
      host.message(msg);
    };
    ws.onclose = (ev) => host.ended(`websocket closed${ev?.code ? " " + ev.code : ""}`);
    ws.onerror = () => host.ended("websocket error");
    return {
      // Before the open, `onopen` sends every subscription.
      subscribe: (sub) => ws.readyState === WS_OPEN && ws.send(this.subOp(sub)),
      unsubscribe: (sub) => ws.readyState === WS_OPEN && ws.send(JSON.stringify({ op: "unsub", topic: sub.topic })),
      resync: (sub) => {
        if (ws.readyState !== WS_OPEN) return;
        ws.send(JSON.stringify({ op: "unsub", topic: sub.topic }));
        ws.send(this.subOp(sub));
      },
      publish: (topic, data) => {
        if (ws.readyState !== WS_OPEN) return false;
        ws.send(JSON.stringify({ op: "pub", topic, data }));
        return true;
      },
      refresh: () => {
        const fresh = this.presentedToken();
        if (ws.readyState === WS_OPEN && fresh) ws.send(JSON.stringify({ op: "auth", token: fresh }));
      },
      close: () => {
        ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
        ws.onerror = () => {}; // `ws` throws on an unhandled error of a socket being closed
        try {
          ws.close(1000);
        } catch {
          /* never opened */
        }
      },
    };
  }

  /** The query of a `/sse` or `/poll` request: every topic, with its cursor and epoch. */
  private streamParams(): Record<string, string | undefined> {
    const topics: string[] = [];
    const since: string[] = [];
    const epochs: string[] = [];
    for (const sub of this.subs.values()) {
      topics.push(sub.topic);
      const s = sub._since();
      if (s !== undefined) {
        since.push(`${sub.topic}:${s}`);
        if (sub.epoch && sub._hasSeqs()) epochs.push(`${sub.topic}:${sub.epoch}`);
      }
    }
    // `max_hz` is one for the whole request: sent when every subscription asks the same.
    const hz = [...this.subs.values()].map((s) => s.options.maxHz);
    const maxHz = hz.length && hz.every((h) => h === hz[0]) && hz[0] !== undefined ? String(hz[0]) : undefined;
    return { topic: topics.join(","), since: since.join(","), epoch: epochs.join(","), max_hz: maxHz };
  }

  /**
   * SSE over fetch rather than EventSource: it can send the token as a
   * header, runs in Node as in browsers, and sees the heartbeat comments
   * (EventSource hides them), which liveness needs.
   */
  private openSse(host: LinkHost): Link {
    let controller: AbortController | undefined;
    let restartQueued = false;
    const start = () => {
      controller?.abort();
      const mine = new AbortController();
      controller = mine;
      if (this.subs.size === 0) {
        // Nothing to stream: the link is up, idle until a subscribe.
        host.opened();
        return;
      }
      this.streamSse(mine, host, () => mine === controller).then(
        () => mine === controller && host.ended("sse stream ended"),
        (e) => mine === controller && host.ended(`sse: ${e?.message ?? e}`),
      );
    };
    const restart = () => {
      // A subscribe or unsubscribe reopens the stream with the new set;
      // several in one turn reopen it once.
      if (restartQueued) return;
      restartQueued = true;
      queueMicrotask(() => {
        restartQueued = false;
        for (const sub of this.subs.values()) sub._connecting();
        start();
      });
    };
    start();
    return {
      subscribe: restart,
      unsubscribe: restart,
      // The stream cannot take a token in-band: reopened with the fresh one, from its cursors.
      refresh: restart,
      close: () => {
        const c = controller;
        controller = undefined;
        c?.abort();
      },
    };
  }

  private async streamSse(controller: AbortController, host: LinkHost, alive: () => boolean): Promise<void> {
    const res = await this.fetchFn()(this.url("/sse", this.streamParams()), {
      headers: { Accept: "text/event-stream", ...this.authHeader() },
      signal: controller.signal,
      cache: "no-store",
    });
    if (res.status !== 200 || !res.body) throw new Error(`status ${res.status}`);
    if (!alive()) return;
    host.opened();
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let data: string[] = [];
    for (;;) {
      const { value, done } = await reader.read();
      if (done || !alive()) return;
      host.activity();
      buffer += decoder.decode(value, { stream: true });
      let nl: number;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        let line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        if (line.endsWith("\r")) line = line.slice(0, -1);
        if (line === "") {
          if (data.length) {
            const text = data.join("\n");
            data = [];
            try {
              if (alive()) host.message(JSON.parse(text));
            } catch {
              /* not JSON: ignored */
            }
          }
        } else if (line.startsWith("data:")) {
          data.push(line.slice(line.startsWith("data: ") ? 6 : 5));
        }
        // `id:`, `retry:` and comments (heartbeats): activity only.
      }
    }
  }

  /**
   * Long-polling: one request at a time, each answer carrying the cursors
   * and epochs for the next. The first request of a link (and the first
   * after a subscribe) asks `timeout=0`, which the broker answers at once
   * with every topic's cursor and epoch: an unreachable `/poll` fails fast,
   * and `subscribed` comes without waiting for a tick. Then each request is
   * held `pollTimeoutSecs`.
   */
  private openPoll(host: LinkHost): Link {
    let controller: AbortController | undefined;
    let stopped = false;
    let running = false;
    let restart = false;
    let first = true;
    /** Topics whose first answer on this link is still to come. */
    const unannounced = new Set<string>(this.subs.keys());
    const loop = async () => {
      while (!stopped && this.subs.size > 0) {
        const mine = new AbortController();
        controller = mine;
        restart = false;
        // Held for no time while a topic's position is still to learn.
        const hold = first || unannounced.size ? 0 : this.opts.pollTimeoutSecs ?? 25;
        if (this.opts.getToken && this.tokenEndsWithin(2000)) {
          this.tokenStale = true;
          await this.currentToken();
          if (stopped) return;
        }
        const timer = setTimeout(() => mine.abort(), (hold + 10) * 1000);
        let body: any = null;
        try {
          const res = await this.fetchFn()(this.url("/poll", { ...this.streamParams(), max_hz: undefined, timeout: String(hold) }), {
            headers: this.authHeader(),
            signal: mine.signal,
            cache: "no-store",
          });
          if (res.status !== 200 && res.status !== 204) throw new Error(`status ${res.status}`);
          if (res.status === 200) body = await res.json();
        } catch (e) {
          if (restart && !stopped) continue; // a new topic set: ask again
          throw e;
        } finally {
          clearTimeout(timer);
        }
        if (stopped) return;
        if (restart) continue;
        if (first) {
          first = false;
          host.opened();
        }
        host.activity();
        if (body) this.onPollAnswer(body, unannounced, host);
      }
      if (first && !stopped) {
        first = false;
        host.opened(); // nothing to poll yet: up, idle until a subscribe
      }
    };
    const run = () => {
      if (running) return;
      running = true;
      loop().then(
        () => (running = false),
        (e) => {
          running = false;
          if (!stopped) host.ended(`poll: ${e?.message ?? e}`);
        },
      );
    };
    const again = () => {
      restart = true;
      controller?.abort();
      run();
    };
    run();
    return {
      subscribe: (sub) => {
        unannounced.add(sub.topic);
        again();
      },
      unsubscribe: again,
      close: () => {
        stopped = true;
        controller?.abort();
      },
    };
  }

  private onPollAnswer(body: any, unannounced: Set<string>, host: LinkHost): void {
    const epochs: Record<string, string> = body.epochs ?? {};
    const cursors = new Map<string, number>();
    for (const part of String(body.cursor ?? "").split(",")) {
      const i = part.lastIndexOf(":");
      if (i > 0) cursors.set(part.slice(0, i), Number(part.slice(i + 1)));
    }
    const gapped = new Set<string>((body.gaps ?? []).map((g: any) => g.topic));
    for (const [topic, epoch] of Object.entries(epochs)) {
      const sub = this.subs.get(topic);
      if (!sub) continue;
      const changed = sub.epoch !== undefined && sub.epoch !== epoch && sub._hasSeqs();
      if (!changed) sub.epoch = epoch;
      if (unannounced.has(topic) || changed) {
        unannounced.delete(topic);
        // The topic's seq: the cursor after this answer, as `subscribed` tells it.
        sub._onSubscribed(cursors.get(topic) ?? 0, epoch, gapped.has(topic) || changed);
      }
    }
    for (const gap of body.gaps ?? []) host.message({ event: "gap", ...gap });
    for (const tick of body.ticks ?? []) host.message(tick);
    for (const [topic, seq] of cursors) {
      const sub = this.subs.get(topic);
      // Topics without ticks yet resume from the broker's cursor.
      if (sub && sub.lastSeq === undefined) sub.subscribedSeq = seq;
    }
  }
}

export default Tickfan;
