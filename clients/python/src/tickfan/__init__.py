"""asyncio client for the tickfan pub/sub broker.

One WebSocket (``tickfan.v1``), reconnected with exponential backoff and full
jitter; every subscription resumes with ``since`` + ``epoch`` after a
reconnect, so the application sees no gap and no duplicate when the broker's
history ring covers the outage, and a :class:`Gap` (or a :class:`Subscribed`
with ``recovered=False``) when it does not or the broker restarted.
"""

from .client import (
    Client,
    Gap,
    State,
    Subscribed,
    Subscription,
    Tick,
    TickfanError,
    backoff_cap,
    backoff_delay,
)

__all__ = [
    "Client",
    "Gap",
    "State",
    "Subscribed",
    "Subscription",
    "Tick",
    "TickfanError",
    "backoff_cap",
    "backoff_delay",
]
