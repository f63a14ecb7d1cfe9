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
    onmessage: ((ev: {
        data: unknown;
    }) => void) | null;
    onclose: ((ev: {
        code?: number;
        reason?: string;
    }) => void) | null;
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
export declare function backoffDelay(attempt: number, opts?: BackoffOptions, random?: () => number): number;
/** The upper bound of [`backoffDelay`]: `initialMs * 2^attempt`, at most `maxMs`. */
export declare function backoffCap(attempt: number, opts?: BackoffOptions): number;
/** A minimal event emitter; a listener that throws does not stop the others. */
declare class Emitter<Events> {
    private listeners;
    on<K extends keyof Events & string>(name: K, fn: (arg: Events[K]) => void): () => void;
    off<K extends keyof Events & string>(name: K, fn: (arg: Events[K]) => void): void;
    protected emit<K extends keyof Events & string>(name: K, arg: Events[K]): void;
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
export declare class Subscription<T = unknown> extends Emitter<SubscriptionEvents<T>> {
    readonly topic: string;
    readonly options: SubscribeOptions;
    private readonly owner;
    /** The seq of the last tick delivered, if any. */
    lastSeq?: number;
    /** The seq the broker announced in `subscribed` (resume point before the first tick). */
    subscribedSeq?: number;
    epoch?: string;
    /** A resume sent with `since`, waiting to learn whether it recovered. */
    private pendingResume?;
    /** The `since` of the subscribe in flight, on this connection. */
    private sentSince?;
    private announced;
    constructor(topic: string, options: SubscribeOptions, owner: Tickfan);
    /** Stops this subscription. */
    unsubscribe(): void;
    /** Where to resume: the last delivered tick, else the announced seq. */
    _since(): number | undefined;
    /** Whether the resume point counts ticks, so that its epoch matters. */
    _hasSeqs(): boolean;
    /** A new connection starts: the next `subscribed` answers this subscribe. */
    _connecting(): void;
    /** The broker's `subscribed` (or, over long-poll, the first answer). */
    _onSubscribed(seq: number, epoch: string, gapFollows?: boolean): void;
    private settle;
    _onGap(from: number, to: number): void;
    _onTick(tick: Tick<T>): void;
    /** Set while a resubscribe (after skipped ticks) is in flight: ticks wait for its replay. */
    resyncing: boolean;
    private lastResync;
    /** Whether a resync may start now: at most one a second, so an overloaded link degrades to gaps. */
    _mayResync(): boolean;
    /** A heartbeat told the topic's seq: ticks after ours that never came were skipped. */
    _onHeartbeat(seq: number): boolean;
    _onError(error: ErrorEvent): void;
}
export interface TickfanEvents {
    state: StateEvent;
    error: ErrorEvent;
}
/** A tickfan broker connection with reconnect, recovery and fallback. */
export declare class Tickfan extends Emitter<TickfanEvents> {
    private readonly base;
    private readonly opts;
    private readonly transports;
    private readonly subs;
    private transportIndex;
    /** A transport connected once: it is kept from then on. */
    private sticky;
    private failuresOnTransport;
    private attempt;
    private link?;
    private linkId;
    private connected;
    private connectedAt;
    private lastActivity;
    private retryTimer?;
    private connectTimer?;
    private watchdog?;
    private offline;
    private closed;
    private unwatch;
    /** The last token `getToken` gave, and whether a fresh one is wanted. */
    private token?;
    private tokenStale;
    /** The current state, as last emitted. */
    state: StateEvent;
    constructor(url: string, opts?: TickfanOptions);
    /** The transport in use (or being tried). */
    get transport(): TransportName;
    /** Subscribes to `topic`; one subscription per topic per client. */
    subscribe<T = unknown>(topic: string, options?: SubscribeOptions): Subscription<T>;
    /**
     * Subscribes `sub` again from its last tick, on the open WebSocket, to
     * replay ticks the broker skipped for this connection (a `drop` or
     * `conflate` slow-consumer policy); false when that cannot be done now.
     */
    _resync(sub: Subscription<any>): boolean;
    _unsubscribe(sub: Subscription<any>): void;
    /**
     * Publishes `data` (any JSON) to `topic`: over the WebSocket when it is
     * open (resolves once sent), else `POST /publish` (resolves with the seq).
     */
    publish(topic: string, data: unknown): Promise<{
        seq?: number;
    }>;
    /** Drops the connection now (as a network failure would) and reconnects with backoff. */
    drop(): void;
    /** Reconnects at once on `transport` (and keeps it). */
    useTransport(transport: TransportName): void;
    /** Closes for good: no more events, no reconnect. */
    close(): void;
    private setState;
    private connect;
    /** The token to present: `getToken`'s (a fresh one when the last is stale), else `token`. */
    private currentToken;
    /**
     * Whether the token `getToken` gave ends within `ms` (read from a JWT's
     * `exp`; a token that is no JWT never does): a long-poll, which hears no
     * `token_expiring`, asks for a fresh one before a request that would
     * present an expired token.
     */
    private tokenEndsWithin;
    /** The token last obtained (or configured), for a request made now. */
    private presentedToken;
    /** The broker says the token expires soon: get a fresh one onto the link. */
    private refreshToken;
    private linkOpened;
    private stopLink;
    private linkEnded;
    /** Replaces the connection at once, without counting a failure. */
    private reconnectNow;
    /** Timers are throttled in background tabs, so silence is measured on the wall clock. */
    private checkLiveness;
    private watchPage;
    private onMessage;
    private url;
    private authHeader;
    private fetchFn;
    private subOp;
    private openWebSocket;
    /** The query of a `/sse` or `/poll` request: every topic, with its cursor and epoch. */
    private streamParams;
    /**
     * SSE over fetch rather than EventSource: it can send the token as a
     * header, runs in Node as in browsers, and sees the heartbeat comments
     * (EventSource hides them), which liveness needs.
     */
    private openSse;
    private streamSse;
    /**
     * Long-polling: one request at a time, each answer carrying the cursors
     * and epochs for the next. The first request of a link (and the first
     * after a subscribe) asks `timeout=0`, which the broker answers at once
     * with every topic's cursor and epoch: an unreachable `/poll` fails fast,
     * and `subscribed` comes without waiting for a tick. Then each request is
     * held `pollTimeoutSecs`.
     */
    private openPoll;
    private onPollAnswer;
}
export default Tickfan;
