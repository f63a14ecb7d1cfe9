"""The real broker binary (port 0, address from --ready-file) and an asyncio
TCP proxy the tests control: cut every connection, refuse new ones (an
outage), point at another broker (a restart)."""

from __future__ import annotations

import asyncio
import os
import pathlib
import subprocess
import tempfile
import time
import json
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[3]
BIN = os.environ.get("TICKFAN_BIN", str(ROOT / "target" / "debug" / "tickfan"))


class Broker:
    def __init__(self, *args: str):
        self.dir = tempfile.TemporaryDirectory(prefix="tickfan-py-")
        ready = pathlib.Path(self.dir.name) / "ready"
        self.proc = subprocess.Popen(
            [BIN, "--listen", "127.0.0.1:0", "--workers", "1", "--ready-file", str(ready), "--log-level", "warn", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 15
        while not ready.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"broker exited: {self.proc.stderr.read().decode()}")
            if time.monotonic() > deadline:
                raise TimeoutError("broker did not get ready")
            time.sleep(0.01)
        self.addr = ready.read_text().splitlines()[0].strip()
        self.port = int(self.addr.rsplit(":", 1)[1])

    def publish(self, topic: str, data) -> int:
        req = urllib.request.Request(
            f"http://{self.addr}/publish?topic={topic}", data=json.dumps(data).encode(), method="POST"
        )
        with urllib.request.urlopen(req, timeout=5) as res:
            return json.loads(res.read())["seq"]

    async def apublish(self, topic: str, data) -> int:
        return await asyncio.to_thread(self.publish, topic, data)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.dir.cleanup()


class Proxy:
    def __init__(self, target_port: int):
        self.target_port = target_port
        self.down = False
        self.writers: set[asyncio.StreamWriter] = set()
        #: Per open connection: set while it forwards (``freeze`` clears it).
        self.gates: dict[asyncio.StreamWriter, asyncio.Event] = {}
        self.frozen: list[asyncio.StreamWriter] = []
        self.server: asyncio.AbstractServer | None = None
        self.port = 0

    async def start(self) -> "Proxy":
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self.writers |= {writer, up_writer}
        gate = asyncio.Event()
        gate.set()
        self.gates[writer] = gate

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    await gate.wait()
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.writers -= {writer, up_writer}
        self.gates.pop(writer, None)

    def freeze(self) -> None:
        """Stops forwarding on every open connection, leaving it open: silence."""
        for writer, gate in self.gates.items():
            gate.clear()
            self.frozen.append(writer)
        self.gates.clear()
        self.writers.clear()

    def cut(self) -> None:
        for w in list(self.writers):
            w.transport.abort()
        self.writers.clear()

    async def close(self) -> None:
        self.cut()
        for w in self.frozen:
            w.transport.abort()
        if self.server is not None:
            self.server.close()


async def until(check, timeout: float = 10.0, what: str = "condition"):
    """Polls ``check`` until truthy: deadlines, not sleeps."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)
