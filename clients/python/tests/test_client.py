"""The Python client against the real broker through a controllable proxy:
order, resume after a cut with no gap and no duplicate, a gap when the
outage outlasts the history ring, an unrecovered ``subscribed`` after a
broker restart (new epoch), and the backoff's jitter bounds."""

from __future__ import annotations

import asyncio

from conftest import Broker, Proxy, until
from tickfan import Client, Gap, Subscribed, Tick, backoff_cap, backoff_delay


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def fast_client(url: str, **kw) -> Client:
    return Client(url, backoff_initial=0.04, backoff_max=0.3, stable_after=60, **kw)


class Collector:
    """Drains a subscription (events=True) into lists in the background."""

    def __init__(self, sub):
        self.sub = sub
        self.ticks: list[Tick] = []
        self.events: list[object] = []
        self.task = asyncio.create_task(self._drain())

    async def _drain(self):
        async for event in self.sub:
            self.events.append(event)
            if isinstance(event, Tick):
                self.ticks.append(event)

    @property
    def seqs(self):
        return [t.seq for t in self.ticks]

    @property
    def subscribed(self):
        return [e for e in self.events if isinstance(e, Subscribed)]

    @property
    def gaps(self):
        return [e for e in self.events if isinstance(e, Gap)]


def test_ticks_arrive_in_order_and_typed():
    async def main():
        broker = Broker()
        try:
            async with fast_client(f"ws://{broker.addr}/ws") as client:
                a = Collector(client.subscribe("A", events=True))
                b = Collector(client.subscribe("B", events=True))
                await until(lambda: a.subscribed and b.subscribed, what="subscribed")
                for i in range(50):
                    await broker.apublish("A", {"i": i})
                    await broker.apublish("B", i)
                await until(lambda: len(a.ticks) == 50 and len(b.ticks) == 50, what="100 ticks")
                assert a.seqs == list(range(1, 51)) and b.seqs == list(range(1, 51))
                assert a.ticks[3].data == {"i": 3} and b.ticks[3].data == 3
                assert a.ticks[0].ts > 1.7e15
                assert a.subscribed[0] == Subscribed("A", 0, a.subscribed[0].epoch, False, False)
                # Publishing over the client's own connection.
                await client.publish("B", "own")
                await until(lambda: len(b.ticks) == 51, what="own publish")
                assert b.ticks[-1].data == "own"
        finally:
            broker.stop()

    run(main())


def test_plain_async_for_yields_ticks_only():
    async def main():
        broker = Broker()
        try:
            broker.publish("P", 1)
            async with fast_client(f"http://{broker.addr}") as client:
                got = []
                async for tick in client.subscribe("P"):
                    got.append(tick)
                    if tick.seq == 1:
                        await broker.apublish("P", 2)
                    if len(got) == 2:
                        break
                assert [(t.seq, t.data) for t in got] == [(1, 1), (2, 2)]
                assert all(isinstance(t, Tick) for t in got)
        finally:
            broker.stop()

    run(main())


async def _cut_and_resume(broker: Broker, proxy: Proxy, client: Client, topics: list[str]):
    cols = [Collector(client.subscribe(t, events=True)) for t in topics]
    await until(lambda: all(c.subscribed for c in cols), what="subscribed")
    for i in range(30):
        for t in topics:
            await broker.apublish(t, i)
    await until(lambda: all(len(c.ticks) == 30 for c in cols), what="first 30")
    epochs = [c.sub.epoch for c in cols]
    proxy.down = True
    proxy.cut()
    await until(lambda: client.state.state == "disconnected", what="disconnected")
    for i in range(40):  # published during the outage
        for t in topics:
            await broker.apublish(t, i)
    proxy.down = False
    await until(lambda: client.state.state == "connected", what="reconnected")
    for i in range(10):
        for t in topics:
            await broker.apublish(t, i)
    await until(lambda: all(len(c.ticks) >= 80 for c in cols), what="all 80")
    for c, epoch in zip(cols, epochs):
        assert c.seqs == list(range(1, 81)), "no gap, no duplicate"
        assert c.gaps == []
        resume = c.subscribed[-1]
        assert (resume.resumed, resume.recovered, resume.epoch) == (True, True, epoch)


def test_a_cut_mid_stream_resumes_with_no_gap_and_no_duplicate():
    async def main():
        broker = Broker()
        proxy = await Proxy(broker.port).start()
        try:
            async with fast_client(proxy.url) as client:
                await _cut_and_resume(broker, proxy, client, ["A", "B", "C"])
        finally:
            await proxy.close()
            broker.stop()

    run(main())


def test_an_outage_longer_than_the_history_ring_gives_a_gap():
    async def main():
        broker = Broker("--history-depth", "8")
        proxy = await Proxy(broker.port).start()
        try:
            async with fast_client(proxy.url) as client:
                a = Collector(client.subscribe("A", events=True))
                await until(lambda: a.subscribed, what="subscribed")
                for i in range(5):
                    await broker.apublish("A", i)
                await until(lambda: len(a.ticks) == 5, what="5 ticks")
                proxy.down = True
                proxy.cut()
                await until(lambda: client.state.state == "disconnected", what="disconnected")
                for i in range(50):
                    await broker.apublish("A", i)
                proxy.down = False
                await until(lambda: a.seqs and a.seqs[-1] == 55, what="tick 55")
                resume = a.subscribed[-1]
                assert (resume.resumed, resume.recovered, resume.seq) == (True, False, 55)
                assert a.gaps == [Gap("A", 6, 47)]
                assert a.seqs == [*range(1, 6), *range(48, 56)]
                assert a.sub.gaps == a.gaps
        finally:
            await proxy.close()
            broker.stop()

    run(main())


def test_a_broker_restart_gives_an_unrecovered_subscribed_and_the_new_numbering():
    async def main():
        first = Broker()
        proxy = await Proxy(first.port).start()
        second = None
        try:
            async with fast_client(proxy.url) as client:
                a = Collector(client.subscribe("A", events=True))
                await until(lambda: a.subscribed, what="subscribed")
                for i in range(3):
                    await first.apublish("A", i)
                await until(lambda: len(a.ticks) == 3, what="3 ticks")
                old_epoch = a.subscribed[0].epoch
                proxy.down = True
                first.stop()
                proxy.cut()
                second = Broker()
                proxy.target_port = second.port
                await second.apublish("A", "x")
                await second.apublish("A", "y")
                proxy.down = False
                await until(lambda: len(a.subscribed) == 2, what="second subscribed")
                resume = a.subscribed[1]
                assert (resume.resumed, resume.recovered) == (True, False)
                assert resume.epoch != old_epoch
                await until(lambda: len(a.ticks) == 4, what="the snapshot")
                assert a.gaps == [Gap("A", 1, 2)]
                await second.apublish("A", "z")
                await until(lambda: len(a.ticks) == 5, what="live")
                assert a.seqs == [1, 2, 3, 2, 3]
                assert [t.data for t in a.ticks[3:]] == ["y", "z"]
        finally:
            await proxy.close()
            if second:
                second.stop()

    run(main())


def test_backoff_is_full_jitter_under_an_exponential_bound():
    assert [backoff_cap(n) for n in range(9)] == [0.5, 1, 2, 4, 8, 16, 20, 20, 20]
    assert backoff_delay(3, rand=lambda: 0.0) == 0
    assert backoff_delay(3, rand=lambda: 0.5) == 2.0
    for n in range(200):
        assert 0 <= backoff_delay(n % 10) < backoff_cap(n % 10)

    async def main():
        proxy = await Proxy(1).start()
        proxy.down = True
        try:
            client = Client(proxy.url, backoff_initial=0.02, backoff_max=0.16, stable_after=60)
            client.subscribe("A")
            await until(lambda: sum(s.state == "disconnected" for s in client.states) >= 6, what="6 retries")
            await client.close()
            drops = [s for s in client.states if s.state == "disconnected"]
            for s in drops:
                cap = backoff_cap(s.attempt - 1, 0.02, 0.16)
                assert 0 <= s.retry_in < cap
            assert [backoff_cap(s.attempt - 1, 0.02, 0.16) for s in drops[:6]] == [0.02, 0.04, 0.08, 0.16, 0.16, 0.16]
        finally:
            await proxy.close()

    run(main())


def test_a_silent_connection_is_replaced_and_resumes_with_no_gap():
    async def main():
        broker = Broker("--set", "broker.heartbeat_interval_ms=200")
        proxy = await Proxy(broker.port).start()
        try:
            async with fast_client(proxy.url, liveness=1.0) as client:
                a = Collector(client.subscribe("L", events=True))
                await until(lambda: a.subscribed, what="subscribed")
                for i in range(5):
                    await broker.apublish("L", i)
                await until(lambda: len(a.ticks) == 5, what="5 ticks")
                proxy.freeze()  # open, but nothing passes
                for i in range(5):
                    await broker.apublish("L", i)
                await until(
                    lambda: any(s.state == "disconnected" and "no heartbeat" in (s.reason or "") for s in client.states),
                    5,
                    "the liveness check",
                )
                await until(lambda: len(a.ticks) == 10, 5, what="the missed ticks")
                assert a.seqs == list(range(1, 11))
                assert a.gaps == [] and a.subscribed[-1].recovered
        finally:
            await proxy.close()
            broker.stop()

    run(main())


def test_cluster_ticks_are_checked_by_prev_not_by_contiguous_seqs():
    # A cluster numbers ticks by its stream (seqs 5, 9, 20 of one topic are
    # complete when each names the one before as `prev`); a tick whose
    # `prev` was never seen is a gap, whatever the distance between seqs.
    from tickfan.client import Subscription

    async def main():
        sub = Subscription(None, "T", None, events=True)
        sub._on_subscribed(0, "S-1")
        for seq, prev in [(5, 0), (9, 5), (20, 9)]:
            sub._on_tick(Tick("T", seq, 1, seq, prev))
        assert sub.gaps == []
        sub._on_tick(Tick("T", 31, 1, 31, 27))
        assert sub.gaps == [Gap("T", 21, 27)]
        sub._on_tick(Tick("T", 31, 1, 31, 27))  # a duplicate of a replay
        assert sub.last_seq == 31
        delivered = []
        while not sub._queue.empty():
            event = sub._queue.get_nowait()
            if isinstance(event, Tick):
                delivered.append(event.seq)
        assert delivered == [5, 9, 20, 31]
        # A single node sends no prev: contiguous seqs, as before.
        single = Subscription(None, "U", None, events=True)
        single._on_subscribed(0, "E")
        for seq in [1, 2, 4]:
            single._on_tick(Tick("U", seq, 1, seq))
        assert single.gaps == [Gap("U", 3, 3)]

    run(main())
