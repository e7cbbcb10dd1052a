"""The network: regions and links as a networkx graph, and routes between regions.

A route minimizes one-way latency, ties broken by transfer cost (see docs/formulation.md, section 1).
"""

from __future__ import annotations

import heapq
import math

import networkx as nx
import numpy as np

from models import INTRA_REGION_LATENCY_MS, Instance


def build_graph(instance: Instance) -> nx.Graph:
    """An undirected graph: one node per region (with its attributes), one edge per link."""
    graph = nx.Graph()
    for region in instance.regions:
        graph.add_node(
            region.id,
            jurisdiction=region.jurisdiction,
            lat=region.lat,
            lon=region.lon,
            gpus=sum(pool.gpu_count for pool in region.pools),
        )
    for link in instance.links:
        graph.add_edge(
            link.source,
            link.target,
            latency_ms=link.latency_ms,
            bandwidth_gbps=link.bandwidth_gbps,
            transfer_cost_cny_per_gb=link.transfer_cost_cny_per_gb,
        )
    return graph


def routes_from(graph: nx.Graph, origin: str) -> dict[str, tuple[float, float]]:
    """(latency_ms, transfer_cny_per_gb) of the route from `origin` to every reachable region."""
    best: dict[str, tuple[float, float]] = {origin: (0.0, 0.0)}
    done: set[str] = set()
    heap = [(0.0, 0.0, origin)]
    while heap:
        latency, cost, node = heapq.heappop(heap)
        if node in done:
            continue
        done.add(node)
        for neighbour, edge in graph[node].items():
            label = (latency + edge["latency_ms"], cost + edge["transfer_cost_cny_per_gb"])
            if neighbour not in done and label < best.get(neighbour, (math.inf, math.inf)):
                best[neighbour] = label
                heapq.heappush(heap, (*label, neighbour))
    best[origin] = (INTRA_REGION_LATENCY_MS, 0.0)
    return best


class RouteTable:
    """Latency and transfer cost from a set of origins to every region, as dense arrays.

    ``latency_ms[k, r]`` and ``transfer_cny_per_gb[k, r]`` hold the route from ``origins[k]`` to
    region index ``r`` (``inf`` where unreachable).
    """

    def __init__(self, instance: Instance, origins: list[str]):
        graph = build_graph(instance)
        region_index = {region.id: r for r, region in enumerate(instance.regions)}
        self.origins = origins
        self.latency_ms = np.full((len(origins), len(region_index)), np.inf)
        self.transfer_cny_per_gb = np.full((len(origins), len(region_index)), np.inf)
        for k, origin in enumerate(origins):
            for region, (latency, cost) in routes_from(graph, origin).items():
                self.latency_ms[k, region_index[region]] = latency
                self.transfer_cny_per_gb[k, region_index[region]] = cost


def paths_from(graph: nx.Graph, origin: str) -> dict[str, tuple[str, ...]]:
    """The route of section 1 from `origin` to every reachable region, as regions origin first.

    The same lexicographic Dijkstra as `routes_from` (latency, then transfer cost), recording the
    predecessor each time a label strictly improves; among tied paths it keeps the first found.
    """
    best: dict[str, tuple[float, float]] = {origin: (0.0, 0.0)}
    parent: dict[str, str] = {}
    done: set[str] = set()
    heap = [(0.0, 0.0, origin)]
    while heap:
        latency, cost, node = heapq.heappop(heap)
        if node in done:
            continue
        done.add(node)
        for neighbour, edge in graph[node].items():
            label = (latency + edge["latency_ms"], cost + edge["transfer_cost_cny_per_gb"])
            if neighbour not in done and label < best.get(neighbour, (math.inf, math.inf)):
                best[neighbour] = label
                parent[neighbour] = node
                heapq.heappush(heap, (*label, neighbour))
    out: dict[str, tuple[str, ...]] = {}
    for node in done:
        path = [node]
        while path[-1] != origin:
            path.append(parent[path[-1]])
        out[node] = tuple(reversed(path))
    return out
