"""The typed keys under which the app keeps its resources."""

from __future__ import annotations

from aiohttp import web

from config.settings import Settings
from gateway.store import Store
from gateway.store.records import Snapshots

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
REDIS_URL = web.AppKey("redis_url", str)
SNAPSHOTS = web.AppKey("snapshots", Snapshots)
