"""The partition tags: stable, one slot share each, so partitions spread over any cluster."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from gateway.keys import JOBS_STREAM, OUTBOX_STREAM, Keys, partition_of, partition_tags
from gateway.store.connection import Transactions
from gateway.store.jobs import Jobs


@pytest.mark.parametrize("partitions", [1, 3, 16, 64])
def test_each_partition_tag_hashes_into_its_own_share_of_the_slots(partitions: int) -> None:
    tags = partition_tags(partitions)
    assert len(tags) == partitions
    for partition, tag in enumerate(tags):
        slot = key_slot(f"callgate:{tag}:item:42".encode())
        share = slot * partitions // REDIS_CLUSTER_HASH_SLOTS
        assert share == partition, (tag, slot)


def test_three_shards_each_own_a_third_of_sixteen_partitions() -> None:
    thirds = [0, 0, 0]
    for tag in partition_tags(16):
        thirds[key_slot(tag.encode()) * 3 // REDIS_CLUSTER_HASH_SLOTS] += 1
    assert sorted(thirds) == [5, 5, 6]


def test_an_entity_always_maps_to_the_same_partition_and_they_all_get_used() -> None:
    keys = Keys("callgate:")
    assert keys.tag_of("+14155550100") == Keys("other:").tag_of("+14155550100")
    assert partition_of("+14155550100", 16) == 11  # crc32, not Python's per-process salted hash
    used = {partition_of(f"+1415555{n:04d}", 16) for n in range(200)}
    assert used == set(range(16))


def test_the_keys_each_step_of_an_item_touches_share_one_slot_under_a_plain_prefix() -> None:
    keys = Keys("callgate:")
    jobs = Jobs(Redis(), Transactions(Redis()), keys, timeline_max=10, idempotency_ttl=60, dead_max=10)
    slots = set()
    for item_id in ("D1", "deal-42", "x" * 40):
        partition = keys.partition_of(item_id)
        job_id = jobs.new_id(item_id)
        together = [
            keys.item(item_id),
            keys.timeline(item_id),
            keys.timeline_count(item_id),
            keys.effects(item_id),
            keys.items(partition),
            keys.stage_items(partition, "sales", "NEW"),
            keys.leads(partition),
            keys.item_jobs(item_id),
            keys.job(job_id),
            keys.jobs_due(partition),
            keys.stream(JOBS_STREAM, partition),
            keys.dead(JOBS_STREAM, partition),
            keys.subscribed(partition),
            keys.stream(OUTBOX_STREAM, partition),
            keys.outbox_queue("sub_1", item_id),
            keys.outbox_due("sub_1", partition),
            keys.outbox_event("sub_1", partition, "evt_1-0-3"),
            keys.outbox_dead("sub_1", partition),
        ]
        assert len({key_slot(key.encode()) for key in together}) == 1, item_id
        slots.add(key_slot(keys.item(item_id).encode()))
    assert len(slots) == 3  # and the items are apart
