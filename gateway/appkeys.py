"""The typed keys under which the app keeps its resources, all of them in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from config.settings import Settings
from gateway.store import Store
from gateway.store.records import Snapshots
from voice.render import Renderer

if TYPE_CHECKING:  # these modules read their key from here
    from gateway.api.routing import Endpoint, Tokens
    from gateway.errors import Spell
    from gateway.metrics import Metrics
    from gateway.serving import ConnectionGate
    from gateway.workers import Workers

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
REDIS_URL = web.AppKey("redis_url", str)
REDIS_CLUSTER = web.AppKey("redis_cluster", bool)  # whether REDIS_URL names a Redis Cluster node
SNAPSHOTS = web.AppKey("snapshots", Snapshots)
# Engines and voices, to check a say request before it is queued (workers render).
RENDERER = web.AppKey("renderer", Renderer)
TOKENS: web.AppKey[Tokens] = web.AppKey("tokens")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
ENDPOINTS: web.AppKey[list[Endpoint]] = web.AppKey("endpoints")
OUT_OF_MEMORY: web.AppKey[Spell] = web.AppKey("out_of_memory")
# Set only in processes that run the workers (``create_app(workers=True)``).
WORKERS: web.AppKey[Workers] = web.AppKey("workers")
CONNECTIONS: web.AppKey[ConnectionGate] = web.AppKey("connections")
