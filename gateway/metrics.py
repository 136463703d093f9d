"""Prometheus metrics, one registry per app so several apps (tests, bench) never collide."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TypeVar, cast

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from gateway.appkeys import METRICS
from gateway.errors import Handler
from gateway.store.connection import RedisHealth

_Metric = TypeVar("_Metric", bound=MetricWrapperBase)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    # Not a metric, but per app like them: whether Redis answers, logged on each change.
    health: RedisHealth = field(default_factory=RedisHealth)

    def __post_init__(self) -> None:
        # The series of the request path, found by labels() once each: labels() takes a lock
        # and builds its key on every call. One entry per series, as the registry holds.
        self._series: dict[tuple[MetricWrapperBase, tuple[str, ...]], MetricWrapperBase] = {}
        self.requests = Counter(
            "callgate_http_requests",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "callgate_http_request_duration_seconds",
            "HTTP request latency by route",
            ["route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
        )
        self.events = Counter(
            "callgate_events",
            "Provider events by kind and outcome",
            ["kind", "outcome"],
            registry=self.registry,
        )
        self.refusals = Counter(
            "callgate_webhook_refusals",
            "Webhooks refused, by provider kind and reason (the error code)",
            ["provider", "reason"],
            registry=self.registry,
        )
        self.withheld = Counter(
            "callgate_withheld_callers",
            "Incoming calls and messages whose caller is not a phone number (withheld, SIP, client)",
            ["kind", "caller"],
            registry=self.registry,
        )
        self.stage_rules = Counter(
            "callgate_stage_rules",
            "Stage rules run on an item's entry into their stage, by kind and outcome (queued, skipped, failed)",
            ["kind", "outcome"],
            registry=self.registry,
        )
        self.stage_entries_given_up = Counter(
            "callgate_stage_entries_given_up",
            "Stage entries whose rules failed every attempt (CALLGATE_MAX_DELIVERIES): a rule's outcome is "
            "failed, or none could be recorded; the WARNING log says why",
            registry=self.registry,
        )
        self.stream_entries = Counter(
            "callgate_stream_entries",
            "Stream entries processed by stream and outcome",
            ["stream", "outcome"],
            registry=self.registry,
        )
        self.outbox_deliveries = Counter(
            "callgate_outbox_deliveries",
            "Attempts to deliver an event to a CRM endpoint, by subscription and outcome "
            "(delivered, failed: to be retried, dead: given up)",
            ["subscription", "outcome"],
            registry=self.registry,
        )
        self.outbox_lag = Histogram(
            "callgate_outbox_delivery_lag_seconds",
            "From an event queued for a subscription to its endpoint taking it",
            ["subscription"],
            registry=self.registry,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 600.0, 3600.0, 86400.0),
        )
        # Set when scraped (gateway.api.ops): alert on no live consumer or a growing backlog.
        self.consumers_live = Gauge(
            "callgate_stream_consumers_live",
            "Consumers of this process consuming now (not backing off a failure)",
            ["stream"],
            registry=self.registry,
        )
        self.stream_length = Gauge(
            "callgate_stream_length", "Entries in the stream still to process", ["stream"], registry=self.registry
        )
        self.stream_pending = Gauge(
            "callgate_stream_pending",
            "Entries delivered to a consumer and not yet acknowledged",
            ["stream"],
            registry=self.registry,
        )
        self.stage_entries_waiting = Gauge(
            "callgate_stage_entries_waiting",
            "Stage entries whose rules have yet to run (a growing number: no worker runs them)",
            registry=self.registry,
        )
        self.stream_oldest_pending = Gauge(
            "callgate_stream_oldest_pending_age_seconds",
            "Age of the oldest pending entry (0 when none)",
            ["stream"],
            registry=self.registry,
        )

    def series(self, metric: _Metric, *values: str) -> _Metric:
        """``metric.labels(*values)``, looked up once."""
        key = (metric, values)
        found = self._series.get(key)
        if found is None:
            found = self._series[key] = metric.labels(*values)
        return cast(_Metric, found)


def _route(request: web.Request) -> str:
    # The route's template, not the raw path: one series per endpoint, however many ids.
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    response = await handler(request)
    route = _route(request)
    metrics = request.app[METRICS]
    metrics.series(metrics.latency, route).observe(time.perf_counter() - started)
    metrics.series(metrics.requests, request.method, route, str(response.status)).inc()
    return response
