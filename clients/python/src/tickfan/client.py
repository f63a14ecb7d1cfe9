"""The client: a connection task that reconnects, and subscriptions that
resume where they were.

The broker numbers each topic's ticks (``seq``) within a numbering
(``epoch``). A subscription remembers the last tick it delivered; after a
reconnect it subscribes again with ``since`` and ``epoch``, and the broker
replays what was missed from its history ring (no gap), or sends a ``gap``
when the ticks left the ring, or the snapshot after a gap when the epoch is
another (a restarted broker). Replayed ticks the subscription already had
are dropped, so nothing is delivered twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Union
from urllib.parse import urlencode, urlsplit, urlunsplit

import websockets


@dataclass(frozen=True)
class Tick:
    """A tick as the broker sent it."""

    topic: str
    seq: int
    #: The broker's receive time, microseconds since the Unix epoch.
    ts: int
    data: Any
    #: The seq of the topic's previous tick, sent by cluster nodes (whose
    #: seqs are stream sequences, not contiguous); ``None`` from a single
    #: node, where it is always ``seq - 1``.
    prev: int | None = None


@dataclass(frozen=True)
class Subscribed:
    """Where the topic is; after a reconnect, whether the resume got everything."""

    topic: str
    seq: int
    epoch: str
    #: This subscribe resumed after earlier ticks (``since`` was sent).
    resumed: bool
    #: A resume that got every tick it missed: no gap, the same numbering.
    recovered: bool


@dataclass(frozen=True)
class Gap:
    """Ticks ``from_seq..=to_seq`` of ``topic`` are lost."""

    topic: str
    from_seq: int
    to_seq: int


@dataclass(frozen=True)
class State:
    """The connection's state: ``connecting``, ``connected``, ``disconnected`` or ``closed``."""

    state: str
    attempt: int
    #: When ``disconnected``: the delay (s) before the next attempt.
    retry_in: float | None = None
    reason: str | None = None


class TickfanError(Exception):
    """An ``error`` event from the broker (``code``, ``message``, ``topic``)."""

    def __init__(self, code: str, message: str, topic: str | None = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.topic = topic


Event = Union[Tick, Subscribed, Gap]


def backoff_cap(attempt: int, initial: float = 0.5, maximum: float = 20.0) -> float:
    """The upper bound of retry number ``attempt`` (0 first): ``initial * 2**attempt``, at most ``maximum``."""
    return min(maximum, initial * 2 ** min(attempt, 30))


def backoff_delay(
    attempt: int,
    initial: float = 0.5,
    maximum: float = 20.0,
    rand: Callable[[], float] = random.random,
) -> float:
    """Full jitter: a uniform draw in ``[0, backoff_cap(attempt))``."""
    return rand() * backoff_cap(attempt, initial, maximum)


_CLOSED = object()

#: Characters a subprotocol entry (an HTTP token) may carry; a JWT's all are.
_SUBPROTOCOL_SAFE = re.compile(r"[A-Za-z0-9._~-]+")


class Subscription:
    """One topic's subscription: an async iterator of ticks (and, with
    ``events=True``, of :class:`Subscribed` and :class:`Gap`)."""

    def __init__(self, client: Client, topic: str, max_hz: float | None, events: bool):
        self.topic = topic
        self.max_hz = max_hz
        self._client = client
        self._events = events
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        #: The seq of the last tick delivered, if any.
        self.last_seq: int | None = None
        #: The seq of the last ``subscribed`` (the resume point before any tick).
        self.subscribed_seq: int | None = None
        self.epoch: str | None = None
        #: Every gap seen, in order.
        self.gaps: list[Gap] = []
        #: Every ``subscribed`` seen, in order.
        self.subscribed: list[Subscribed] = []
        self._sent_since: int | None = None
        self._pending: Subscribed | None = None
        self._closed = False

    # -- what the client sends --

    def _since(self) -> int | None:
        return self.last_seq if self.last_seq is not None else self.subscribed_seq

    def _has_seqs(self) -> bool:
        return (self._since() or 0) > 0

    def _op(self) -> dict[str, Any]:
        self._sent_since = self._since()
        self._pending = None
        op: dict[str, Any] = {"op": "sub", "topic": self.topic}
        if self._sent_since is not None:
            op["since"] = self._sent_since
            if self.epoch and self._has_seqs():
                op["epoch"] = self.epoch
        if self.max_hz is not None:
            op["max_hz"] = self.max_hz
        return op

    # -- what the broker sends --

    def _emit(self, event: Event) -> None:
        if isinstance(event, Tick) or self._events:
            self._queue.put_nowait(event)

    def _on_subscribed(self, seq: int, epoch: str) -> None:
        since = self._sent_since
        resumed = since is not None
        same_epoch = self.epoch is None or self.epoch == epoch or not self._has_seqs()
        if not same_epoch:
            self.last_seq = None  # another numbering: start over
        self.epoch = epoch
        self.subscribed_seq = seq
        if not resumed or not same_epoch or seq <= since:
            event = Subscribed(self.topic, seq, epoch, resumed, resumed and same_epoch and seq == since)
            self.subscribed.append(event)
            self._emit(event)
        else:
            # Missed ticks follow, or a gap: the next message tells.
            self._pending = Subscribed(self.topic, seq, epoch, True, False)

    def _settle(self, recovered: bool) -> None:
        if self._pending is None:
            return
        event = Subscribed(**{**self._pending.__dict__, "recovered": recovered})
        self._pending = None
        self.subscribed.append(event)
        self._emit(event)

    def _on_gap(self, from_seq: int, to_seq: int) -> None:
        self._settle(False)
        if self.last_seq is not None and to_seq > self.last_seq:
            self.last_seq = to_seq
        gap = Gap(self.topic, from_seq, to_seq)
        self.gaps.append(gap)
        self._emit(gap)

    def _on_tick(self, tick: Tick) -> None:
        self._settle(True)
        last = self.last_seq
        if last is not None and tick.seq <= last:
            return  # a duplicate of a replay
        # The tick that should have come before: ``prev`` from a cluster,
        # else the seq before (a single node numbers contiguously).
        before = tick.prev if tick.prev is not None else tick.seq - 1
        if last is not None and before > last and self.max_hz is None:
            self._on_gap(last + 1, before)  # the broker skipped ticks
        self.last_seq = tick.seq
        self._emit(tick)

    def _end(self) -> None:
        self._closed = True
        self._queue.put_nowait(_CLOSED)

    # -- the application's side --

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        try:
            while True:
                item = await self._queue.get()
                if item is _CLOSED:
                    return
                yield item
        finally:
            # Leaving the loop ends the subscription.
            if not self._closed:
                await self.unsubscribe()

    async def unsubscribe(self) -> None:
        """Stops the subscription; its iterator ends."""
        await self._client._unsubscribe(self)


class Client:
    """A tickfan connection that reconnects and resumes.

    ``url`` is the WebSocket URL (``ws://host:9001/ws``; an ``http(s)://``
    URL without a path gets ``/ws``). ``token`` is sent as ``?token=``.
    ``get_token`` (a function, or a coroutine function, returning a token)
    is for per-user tokens that expire: it is asked for a fresh token
    before each connection (which presents it as a ``tickfan.token.<jwt>``
    subprotocol entry) and when the broker sends ``token_expiring``; the
    fresh token is then sent in-band (``{"op":"auth"}``), so the stream
    goes on. It takes precedence over ``token``.
    ``liveness`` (s): a subscribed connection that hears nothing for this
    long (heartbeats come every 5 s by default) is dead and is replaced.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        get_token: Callable[[], str | Awaitable[str]] | None = None,
        backoff_initial: float = 0.5,
        backoff_max: float = 20.0,
        stable_after: float = 10.0,
        liveness: float = 15.0,
        open_timeout: float = 10.0,
        on_state: Callable[[State], None] | None = None,
        on_error: Callable[[TickfanError], None] | None = None,
        rand: Callable[[], float] = random.random,
    ):
        parts = urlsplit(url)
        scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
        path = parts.path or "/ws"
        query = parts.query
        if token and get_token is None:
            query = (query + "&" if query else "") + urlencode({"token": token})
        self.url = urlunsplit((scheme, parts.netloc, path, query, ""))
        self.get_token = get_token
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.stable_after = stable_after
        self.liveness = liveness
        self.open_timeout = open_timeout
        self.on_state = on_state
        self.on_error = on_error
        self._rand = rand
        self._subs: dict[str, Subscription] = {}
        self._ws: Any = None
        self._connected = asyncio.Event()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.attempt = 0
        #: Every state change, in order (the last is the current one).
        self.states: list[State] = []

    async def __aenter__(self) -> Client:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def start(self) -> None:
        """Starts the connection task (``async with`` does it)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="tickfan-client")

    @property
    def state(self) -> State | None:
        return self.states[-1] if self.states else None

    def subscribe(self, topic: str, *, max_hz: float | None = None, events: bool = False) -> Subscription:
        """Subscribes to ``topic``; iterate the result for its ticks."""
        if topic in self._subs:
            raise ValueError(f"already subscribed to {topic!r}")
        sub = Subscription(self, topic, max_hz, events)
        self._subs[topic] = sub
        self.start()
        if self._ws is not None and self._connected.is_set():
            asyncio.ensure_future(self._send(sub._op()))
        return sub

    async def _unsubscribe(self, sub: Subscription) -> None:
        if self._subs.get(sub.topic) is not sub:
            return
        del self._subs[sub.topic]
        sub._end()
        if self._ws is not None and self._connected.is_set():
            await self._send({"op": "unsub", "topic": sub.topic})

    async def publish(self, topic: str, data: Any, timeout: float = 10.0) -> None:
        """Publishes ``data`` (any JSON) to ``topic`` over the connection,
        waiting up to ``timeout`` s for it to be up."""
        self.start()
        await asyncio.wait_for(self._connected.wait(), timeout)
        await self._ws.send(json.dumps({"op": "pub", "topic": topic, "data": data}))

    async def wait_connected(self, timeout: float = 10.0) -> None:
        await asyncio.wait_for(self._connected.wait(), timeout)

    def drop(self) -> None:
        """Drops the connection as a network failure would; it reconnects."""
        if self._ws is not None:
            self._ws.transport.abort()

    async def close(self) -> None:
        """Closes for good; every subscription's iterator ends."""
        self._closed = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        for sub in list(self._subs.values()):
            sub._end()
        self._subs.clear()
        self._set_state(State("closed", self.attempt))

    # -- the connection task --

    def _set_state(self, state: State) -> None:
        self.states.append(state)
        if self.on_state:
            self.on_state(state)

    async def _send(self, op: dict[str, Any]) -> None:
        with contextlib.suppress(Exception):  # a dead link is noticed by the reader
            await self._ws.send(json.dumps(op))

    async def _token(self) -> str:
        """A fresh token from ``get_token``."""
        assert self.get_token is not None
        token = self.get_token()
        if inspect.isawaitable(token):
            token = await token
        return str(token)

    async def _connect_args(self) -> tuple[str, list[str]]:
        """The URL and subprotocols of the next connection: with
        ``get_token``, a fresh token as a subprotocol entry when its
        characters fit one (a JWT's do), else as ``?token=``."""
        if self.get_token is None:
            return self.url, ["tickfan.v1"]
        try:
            token = await self._token()
        except Exception as e:  # the application's callback failed: retried with backoff
            raise OSError(f"get_token failed: {e}") from e
        if _SUBPROTOCOL_SAFE.fullmatch(token):
            return self.url, ["tickfan.v1", f"tickfan.token.{token}"]
        parts = urlsplit(self.url)
        query = (parts.query + "&" if parts.query else "") + urlencode({"token": token})
        return urlunsplit((parts.scheme, parts.netloc, parts.path, query, "")), ["tickfan.v1"]

    async def _refresh(self) -> None:
        """``token_expiring``: sends a fresh token in-band."""
        try:
            token = await self._token()
        except Exception as e:  # the application's callback failed
            if self.on_error:
                self.on_error(TickfanError("token_refresh_failed", str(e)))
            return
        if self._ws is not None:
            await self._send({"op": "auth", "token": token})

    async def _run(self) -> None:
        while not self._closed:
            self._set_state(State("connecting", self.attempt))
            connected_at: float | None = None
            reason = "closed"
            try:
                url, subprotocols = await self._connect_args()
                async with websockets.connect(
                    url,
                    subprotocols=subprotocols,
                    open_timeout=self.open_timeout,
                    max_size=None,
                ) as ws:
                    self._ws = ws
                    connected_at = time.monotonic()
                    # Every subscription, including any made while these
                    # sends wait; only then is the link "connected", from
                    # when subscribe() sends its own (none twice, none lost).
                    sent: set[str] = set()
                    while pending := [s for s in self._subs.values() if s.topic not in sent]:
                        for sub in pending:
                            sent.add(sub.topic)
                            await ws.send(json.dumps(sub._op()))
                    self._connected.set()
                    self._set_state(State("connected", self.attempt))
                    await self._read(ws)
            except asyncio.CancelledError:
                raise
            except (OSError, asyncio.TimeoutError, websockets.WebSocketException) as e:
                reason = f"{type(e).__name__}: {e}"
            finally:
                self._ws = None
                self._connected.clear()
            if self._closed:
                return
            if connected_at is not None and time.monotonic() - connected_at >= self.stable_after:
                self.attempt = 0
            delay = backoff_delay(self.attempt, self.backoff_initial, self.backoff_max, self._rand)
            self.attempt += 1
            self._set_state(State("disconnected", self.attempt, delay, reason))
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    async def _read(self, ws: Any) -> None:
        while True:
            # Liveness on a subscribed connection: heartbeats arrive on
            # quiet ones, so silence means the link is dead.
            timeout = self.liveness if self._subs else None
            try:
                raw = await asyncio.wait_for(ws.recv(), timeout)
            except asyncio.TimeoutError:
                # Dead: no closing handshake, which would wait for a reply
                # that cannot come.
                ws.transport.abort()
                raise asyncio.TimeoutError("no heartbeat") from None
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            if isinstance(msg, dict):
                self._dispatch(msg)

    def _dispatch(self, msg: dict[str, Any]) -> None:
        topic = msg.get("topic")
        sub = self._subs.get(topic) if isinstance(topic, str) else None
        event = msg.get("event")
        if event is None:
            if sub is not None and isinstance(msg.get("seq"), int):
                prev = msg.get("prev")
                sub._on_tick(
                    Tick(
                        topic,
                        msg["seq"],
                        msg.get("ts", 0),
                        msg.get("data"),
                        prev if isinstance(prev, int) else None,
                    )
                )
        elif event == "subscribed":
            if sub is not None:
                sub._on_subscribed(msg["seq"], msg["epoch"])
        elif event == "gap":
            if sub is not None:
                sub._on_gap(msg["from"], msg["to"])
        elif event == "token_expiring":
            if self.get_token is not None:
                asyncio.ensure_future(self._refresh())
        elif event == "error":
            error = TickfanError(msg.get("code", ""), msg.get("message", ""), topic)
            if self.on_error:
                self.on_error(error)
