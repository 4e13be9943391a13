"""Sampling follows the regions, not the node ids an engine happened to assign."""

from __future__ import annotations

from strategies.sampling import region_order, sample_clients, select_stragglers

REGIONS = [f"region-{i:02d}" for i in range(12)]


class Numbered:
    """The part of the ServerApp's grid sampling uses: ``region_of``."""

    def __init__(self, ids: list[int]) -> None:
        self.regions = dict(zip(ids, REGIONS, strict=True))

    def region_of(self, node_id: int) -> str:
        return self.regions[node_id]


def _sampled_regions(ids: list[int], server_round: int) -> tuple[list[str], dict[str, int]]:
    grid = Numbered(ids)
    key = region_order(grid)
    kwargs = {"seed": 7, "server_round": server_round}
    chosen = sample_clients(ids, fraction=0.5, minimum=2, stream=0, key=key, **kwargs)
    slow = select_stragglers(chosen, fraction=0.5, max_steps=9, key=key, **kwargs)
    return [grid.region_of(n) for n in chosen], {grid.region_of(n): k for n, k in slow.items()}


def test_the_same_seed_samples_the_same_regions_whatever_the_node_ids():
    in_order = list(range(100, 112))  # the in-process engine: ids follow the sorted regions
    scrambled = [9_000_000_017, 13, 2**62 + 5, 77, 4, 123_456, 8, 2**40, 31, 600, 2, 99]  # Ray
    for server_round in (1, 2, 3):
        assert _sampled_regions(in_order, server_round) == _sampled_regions(scrambled, server_round)


def test_without_region_of_the_node_ids_decide():
    ids = [5, 3, 9, 1]
    assert region_order(object()) is None
    assert sample_clients(ids, fraction=1.0, minimum=1, seed=0, server_round=1, stream=0) == [
        1,
        3,
        5,
        9,
    ]
