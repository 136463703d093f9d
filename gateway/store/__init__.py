"""All Redis I/O of callgate: connections, the embedded server and one module per aggregate.

Only this package and ``gateway.streams`` import ``redis``; the rest of the gateway calls them.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from config.lines import Line, Pipeline, Provider
from config.settings import Settings
from config.triggers import Trigger
from gateway.keys import Keys
from gateway.store.events import Events
from gateway.store.items import Items
from gateway.store.records import Records, Snapshots


@dataclass(frozen=True)
class Store:
    redis: Redis
    keys: Keys
    providers: Records[Provider]
    lines: Records[Line]
    pipelines: Records[Pipeline]
    items: Items
    events: Events
    triggers: Records[Trigger]

    @classmethod
    def open(cls, redis: Redis, settings: Settings, snapshots: Snapshots) -> Store:
        """A store on ``redis``; stores of one process share ``snapshots`` of admin records."""
        keys = Keys(settings.key_prefix)
        return cls(
            redis=redis,
            keys=keys,
            providers=Records(redis, keys.providers, Provider, snapshots),
            lines=Records(redis, keys.lines, Line, snapshots),
            pipelines=Records(redis, keys.pipelines, Pipeline, snapshots),
            items=Items(redis, keys, settings.timeline_max, settings.dedup_ttl_seconds),
            events=Events(redis, keys, settings.dedup_ttl_seconds),
            triggers=Records(redis, keys.triggers, Trigger, snapshots),
        )
