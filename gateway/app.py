"""The app factory: routes, middleware and one cleanup context per resource."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from config.settings import Settings
from gateway.api.admin import ENDPOINTS_ADMIN
from gateway.api.automation import ENDPOINTS_AUTOMATION
from gateway.api.conversations import ENDPOINTS_CONVERSATIONS
from gateway.api.crm import ENDPOINTS_CRM
from gateway.api.feed import ENDPOINTS_FEED
from gateway.api.hooks import ENDPOINTS_HOOKS
from gateway.api.invites import ENDPOINTS_INVITES
from gateway.api.ops import ENDPOINTS_OPS
from gateway.api.optouts import ENDPOINTS_OPTOUTS
from gateway.api.robocalls import ENDPOINTS_ROBOCALLS
from gateway.api.routing import Tokens, add_endpoints
from gateway.api.sandbox import ENDPOINTS_SANDBOX
from gateway.api.sms import ENDPOINTS_SMS
from gateway.api.stage_rules import ENDPOINTS_STAGE_RULES
from gateway.api.subscriptions import ENDPOINTS_SUBSCRIPTIONS
from gateway.api.usage import ENDPOINTS_USAGE
from gateway.appkeys import (
    METRICS,
    OUT_OF_MEMORY,
    REDIS_CLUSTER,
    REDIS_URL,
    RENDERER,
    SETTINGS,
    SNAPSHOTS,
    STORE,
    TOKENS,
    WORKERS,
)
from gateway.datadir import tighten
from gateway.errors import Spell, error_middleware
from gateway.metrics import Metrics, metrics_middleware
from gateway.serving import connection_middleware, server_log
from gateway.store import Store
from gateway.store.connection import UNAVAILABLE, cluster_enabled, connect, redacted
from gateway.store.embedded import EmbeddedRedis
from gateway.store.records import Snapshots
from gateway.tokens import ensure_tokens
from gateway.workers import running_workers
from voice.render import renderer_for

log = logging.getLogger(__name__)


class StartupError(RuntimeError):
    """The gateway cannot start; the message is one line for the operator."""


async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    embedded = None if settings.redis_url else EmbeddedRedis(settings.data_dir)
    if embedded is not None:
        await embedded.start()
    url = embedded.url if embedded else str(settings.redis_url)
    try:
        cluster = await cluster_enabled(url, settings.redis_cluster)
    except UNAVAILABLE as exc:
        raise StartupError(f"CALLGATE_REDIS_URL: Redis at {redacted(url)} does not answer ({exc})") from None
    redis = connect(url, cluster=cluster)
    try:
        try:
            await redis.ping()
        except UNAVAILABLE as exc:
            raise StartupError(f"CALLGATE_REDIS_URL: Redis at {redacted(url)} does not answer ({exc})") from None
        store = app[STORE] = Store.open(redis, settings, app[SNAPSHOTS])
        app[REDIS_URL] = url
        app[REDIS_CLUSTER] = cluster
        try:
            yield
        finally:
            await store.aclose()
    finally:
        await redis.aclose()
        if embedded is not None:
            await embedded.stop()


async def workers_ctx(app: web.Application) -> AsyncIterator[None]:
    """Event consumers and timers, on their own client: blocking reads need long timeouts."""
    settings = app[SETTINGS]
    redis = connect(app[REDIS_URL], blocking=True, cluster=app[REDIS_CLUSTER])
    store = Store.open(redis, settings, app[SNAPSHOTS])
    try:
        async with running_workers(store, settings, app[METRICS]) as workers:
            app[WORKERS] = workers
            yield
    finally:
        await store.aclose()
        await redis.aclose()


def create_app(settings: Settings, *, workers: bool = True) -> web.Application:
    """The gateway: API, webhooks and (unless ``workers`` is False) the event workers."""
    tighten(settings.data_dir)
    settings, _ = ensure_tokens(settings)
    app = web.Application(
        middlewares=[connection_middleware, metrics_middleware, error_middleware],
        client_max_size=settings.max_body_bytes,
        handler_args={"logger": server_log()},
    )
    app[SETTINGS] = settings
    app[TOKENS] = Tokens(admin=str(settings.admin_token), api=str(settings.api_token))
    app[METRICS] = Metrics()
    app[SNAPSHOTS] = Snapshots()
    app[RENDERER] = renderer_for(settings)
    app[OUT_OF_MEMORY] = Spell()
    add_endpoints(
        app,
        [
            *ENDPOINTS_OPS,
            *ENDPOINTS_ADMIN,
            *ENDPOINTS_CRM,
            *ENDPOINTS_AUTOMATION,
            *ENDPOINTS_FEED,
            *ENDPOINTS_HOOKS,
            *ENDPOINTS_ROBOCALLS,
            *ENDPOINTS_USAGE,
            *ENDPOINTS_SMS,
            *ENDPOINTS_OPTOUTS,
            *ENDPOINTS_CONVERSATIONS,
            *ENDPOINTS_INVITES,
            *ENDPOINTS_SANDBOX,
            *ENDPOINTS_SUBSCRIPTIONS,
            *ENDPOINTS_STAGE_RULES,
        ],
    )
    app.cleanup_ctx.append(redis_ctx)
    if workers:
        app.cleanup_ctx.append(workers_ctx)
    return app
