"""The Python client's ``get_token`` against the real broker with per-user
JWTs that live 3 s (no leeway, ``token_expiring`` 2 s before the end): the
fresh token goes in-band, so ticks keep coming past several expiries with
no gap, no duplicate and no reconnect."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time

from conftest import Broker, until
from tickfan import Client, Tick

SECRET = "python-client-test-secret-0123456789abc"


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def sign(sub: str, ttl: int, topics: list[str]) -> str:
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64url(json.dumps({"sub": sub, "exp": int(time.time()) + ttl, "tf.sub": topics}).encode())
    mac = hmac.new(SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(mac)}"


def test_get_token_refreshes_in_band_with_no_gap_and_no_reconnect():
    broker = Broker(
        "--set", "jwt.algorithm=HS256",
        "--set", f"jwt.hmac_secret={SECRET}",
        "--set", "jwt.leeway_secs=0",
        "--set", "jwt.expiry_warning_secs=2",
        "--set", "auth.subscribe_requires_token=true",
    )
    calls = 0

    async def get_token() -> str:
        nonlocal calls
        calls += 1
        return sign("alice", 3, ["prices.>"])

    async def main():
        async with Client(f"ws://{broker.addr}/ws", get_token=get_token, backoff_initial=0.04) as client:
            sub = client.subscribe("prices.AAPL")
            seqs: list[int] = []

            async def drain():
                async for tick in sub:
                    assert isinstance(tick, Tick)
                    seqs.append(tick.seq)

            task = asyncio.create_task(drain())
            await client.wait_connected()
            await until(lambda: sub.subscribed, 10, "subscribed")
            # Over 7 s the first token and at least one refreshed one expire.
            published = 0
            end = time.monotonic() + 7
            while time.monotonic() < end:
                published = await broker.apublish("prices.AAPL", {"n": published})
                await asyncio.sleep(0.02)  # pacing the feed, not synchronising
            await until(lambda: len(seqs) >= published, 10, f"all {published} ticks")
            task.cancel()
            assert seqs == list(range(1, published + 1)), "no gap, no duplicate"
            assert [s for s in client.states if s.state == "disconnected"] == [], client.states
            assert calls >= 3, calls

    try:
        asyncio.run(asyncio.wait_for(main(), 60))
    finally:
        broker.stop()
