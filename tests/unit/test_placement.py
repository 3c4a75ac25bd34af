"""Least-loaded placement, relative to each node's capacity and weight."""

from __future__ import annotations

from collections import Counter

from controlplane.jobs import placement
from controlplane.nodes.models import Node


def test_pick_node_is_least_loaded_relative_to_capacity_and_weight():
    small = Node(pk=1, name="small", capacity=2, weight=1.0)
    big = Node(pk=2, name="big", capacity=6, weight=1.0)
    heavy = Node(pk=3, name="heavy", capacity=2, weight=4.0)
    assert placement.pick_node([small, big], Counter()) is big
    assert placement.pick_node([small, big], Counter({2: 4})) is small  # 5/6 > 1/2
    assert placement.pick_node([small, heavy], Counter({3: 1})) is heavy  # 2/8 < 1/2
    assert placement.pick_node([small, heavy], Counter({1: 2, 3: 2})) is None  # full
    assert placement.pick_node([], Counter()) is None
