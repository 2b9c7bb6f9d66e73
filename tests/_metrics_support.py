"""Reading what the servers count and log, for the tests of both servers."""

from __future__ import annotations

from typing import Any


def samples(metrics_text: str, name: str, **labels: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples of ``name`` in a Prometheus exposition whose labels include ``labels``, keyed by
    their sorted labels."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(metrics_text) for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    }


def by(label: str, found: dict[tuple[tuple[str, str], ...], float]) -> dict[str, float]:
    """``samples(...)`` keyed by one label's value (summed over the others)."""
    out: dict[str, float] = {}
    for key, value in found.items():
        name = dict(key)[label]
        out[name] = out.get(name, 0.0) + value
    return out


def access_lines(records: list[Any]) -> list[str]:
    """The access-log lines among captured log records, in order."""
    return [r.getMessage() for r in records if r.name == "agent_embeddings.access"]
