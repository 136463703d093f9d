"""The partition tags: stable, one slot share each, so partitions spread over any cluster."""

from __future__ import annotations

import pytest
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from gateway.keys import Keys, partition_of, partition_tags


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
