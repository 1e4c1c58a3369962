"""Telling a broker that lost its messages from one that kept them.

A Redis broker restarted without persistence comes back empty: every message it held is gone,
though the database still has those chunks ``queued``. A sentinel key written into the broker's
own database disappears exactly when its messages do, so the first worker to (re)connect and
find it missing knows the messages were lost -- and asks for every queued chunk to be re-sent
at once, instead of at its deadline (``MODELYARD_STALL_SECONDS``, 600 s by default). On a
broker that kept its data (AOF, RDB, RabbitMQ, the embedded SQLite broker) nothing is re-sent
early. The first worker on a brand-new broker finds it missing too: its re-sends are harmless
(a re-sent chunk is a new release; the older message is dropped when a worker takes it).
"""

from __future__ import annotations

import time

import redis

EPOCH_KEY = "modelyard:broker-epoch"


def broker_lost_messages(broker_url: str) -> bool:
    """True when this call (re)created the sentinel: the broker's data is new. Brokers other
    than Redis keep their messages: always False for them."""
    if not broker_url.startswith(("redis://", "rediss://")):
        return False
    client = redis.Redis.from_url(broker_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        return bool(client.set(EPOCH_KEY, f"{time.time():.3f}", nx=True))
    finally:
        client.close()
