"""Prometheus metrics and the access log of the servers (``/metrics`` on HTTP, ``--metrics-port`` for gRPC).

Request metrics are counted by the servers, each request once, when it is answered
(:meth:`ServerMetrics.request_done`, which also writes its access-log line); generator metrics
are read at scrape time from the manager's built-in collector (``manager.stats()``), so they
cost nothing between scrapes. Labels are server kinds, routes, status codes, error types,
generator names and providers — never a key, a URL or a text.

| metric | type | labels |
|---|---|---|
| ``agent_embeddings_requests_total`` | counter | server, route, status |
| ``agent_embeddings_request_errors_total`` | counter | server, type |
| ``agent_embeddings_request_duration_seconds`` | histogram | server, route |
| ``agent_embeddings_request_batch_size`` | histogram | server |
| ``agent_embeddings_requests_in_flight`` | gauge | server |
| ``agent_embeddings_generator_calls_total`` / ``_texts_total`` / ``_prompt_tokens_total`` | counter | generator, provider |
| ``agent_embeddings_generator_errors_total`` | counter | generator, type |
| ``agent_embeddings_generator_retries_total`` / ``_fallbacks_total`` | counter | generator |
| ``agent_embeddings_generator_in_flight`` | gauge | generator |
| ``agent_embeddings_generator_latency_seconds`` / ``_batch_size`` | histogram | generator |
| ``agent_embeddings_generator_micro_batch_texts`` / ``_micro_batch_callers`` | histogram | generator |
| ``agent_embeddings_cache_hits_total`` / ``_misses_total`` / ``_errors_total``, ``_entries`` | counter / gauge | generator, kind |

``requests_total`` counts every request a server answers: HTTP by route (``/v1/embeddings``,
``/v1/models``, ``/health``, ``/metrics``, ``other``) and status code, gRPC by RPC (``Embed``,
``Info``) and status name. ``request_errors_total`` counts, once more, every one of those
answers that is not a success (HTTP status >= 400, gRPC status other than ``OK``), so that
for each server the errors add up to the non-success requests. Its ``type`` names the cause,
with the same label on both servers for the same cause:

| type | HTTP | gRPC | cause |
|---|---|---|---|
| ``invalid_api_key`` | 401 | ``UNAUTHENTICATED`` | missing or wrong bearer key |
| ``invalid_request_error``, ``invalid_json``, ``token_ids_not_supported`` | 400, 404 / 405 (no such route) | ``INVALID_ARGUMENT`` | a malformed or invalid request |
| ``too_many_inputs``, ``input_too_long`` | 413 | ``INVALID_ARGUMENT`` | over ``--max-inputs`` / ``--max-input-chars`` |
| ``request_too_large`` | 413 | (refused by gRPC itself, not seen) | over ``--max-request-bytes`` |
| ``model_not_found`` | 404 | ``NOT_FOUND`` | an unknown model |
| ``server_busy`` | 429 | ``RESOURCE_EXHAUSTED`` | at ``--max-concurrency`` |
| ``cancelled`` | 499 (no answer) | ``CANCELLED`` | the caller left before the answer |
| ``deadline_exceeded`` | | ``DEADLINE_EXCEEDED`` | the caller's deadline passed |
| the SDK error class: ``BackendUnavailableError``, ``RateLimitError``, ... | 500 / 429 | ``UNAVAILABLE``, ``INTERNAL``, ... | the backend failed (details in the server log) |
| ``server_error`` | 500 | ``INTERNAL`` | a bug in the server (traceback in the log) |
| ``unavailable`` | 503 | | ``/health`` while loading or draining |
| otherwise, for an answer that names no cause, by its HTTP status: ``unsupported_media_type``, ``http_NNN``, ... | | | |

On HTTP the cause is the OpenAI error's ``code`` (else its ``type``) or the SDK error class.

The access log (logger ``agent_embeddings.access``, INFO) has one line per answered request,
for both servers: server, method and route, status, number of texts (``-`` when not known),
milliseconds and the error type. It never holds a key, a text or a URL::

    http POST /v1/embeddings 200 texts=3 4.2ms
    grpc Embed NOT_FOUND texts=1 0.3ms error=model_not_found
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

from ..manager import EmbeddingGeneratorManager
from ..observability import BATCH_BUCKETS, LATENCY_BUCKETS_S

__all__ = ["ACCESS_LOG", "CONTENT_TYPE", "ServerMetrics", "start_metrics_server"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: one line per answered request, both servers (see the module's docstring)
ACCESS_LOG = logging.getLogger("agent_embeddings.access")


class _ManagerCollector:
    """Generator and cache metrics, read from ``manager.stats()`` at scrape time."""

    def __init__(self, manager: EmbeddingGeneratorManager) -> None:
        self.manager = manager

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        p = "agent_embeddings_generator_"
        calls = CounterMetricFamily(p + "calls", "Generator calls (embed/encode/generate...)", labels=["generator", "provider"])
        texts = CounterMetricFamily(p + "texts", "Texts asked for", labels=["generator", "provider"])
        tokens = CounterMetricFamily(p + "prompt_tokens", "Tokens processed by the backend", labels=["generator", "provider"])
        errors = CounterMetricFamily(p + "errors", "Failed generator calls by error type", labels=["generator", "type"])
        retries = CounterMetricFamily(p + "retries", "Retries of transient failures (shared loop)", labels=["generator"])
        fallbacks = CounterMetricFamily(p + "fallbacks", "Calls answered by the fallback", labels=["generator"])
        in_flight = GaugeMetricFamily(p + "in_flight", "Generator calls in progress", labels=["generator"])
        latency = HistogramMetricFamily(p + "latency_seconds", "Generator call latency", labels=["generator"])
        batch = HistogramMetricFamily(p + "batch_size", "Texts per generator call", labels=["generator"])
        micro_texts = HistogramMetricFamily(
            p + "micro_batch_texts", "Texts per coalesced backend call (micro-batching)", labels=["generator"]
        )
        micro_callers = HistogramMetricFamily(
            p + "micro_batch_callers", "Calls coalesced into one backend call (micro-batching)", labels=["generator"]
        )
        c = "agent_embeddings_cache_"
        hits = CounterMetricFamily(c + "hits", "Texts answered from the cache", labels=["generator", "kind"])
        misses = CounterMetricFamily(c + "misses", "Texts not in the cache", labels=["generator", "kind"])
        cache_errors = CounterMetricFamily(c + "errors", "Cache failures (computed without it)", labels=["generator", "kind"])
        entries = GaugeMetricFamily(c + "entries", "Vectors held by the cache", labels=["generator", "kind"])
        for name, row in self.manager.stats().items():
            provider = str(row["provider"])
            calls.add_metric([name, provider], row["calls"])
            texts.add_metric([name, provider], row["texts"])
            tokens.add_metric([name, provider], row["prompt_tokens"])
            for kind, count in sorted(row["errors"].items()):
                errors.add_metric([name, kind], count)
            retries.add_metric([name], row["retries"])
            fallbacks.add_metric([name], row["fallbacks"])
            in_flight.add_metric([name], row["in_flight"])
            histograms = (
                (latency, row["latency_s"]), (batch, row["batch_size"]),
                (micro_texts, row["micro_batch_texts"]), (micro_callers, row["micro_batch_callers"]),
            )
            for family, hist in histograms:
                buckets = [("+Inf" if b == float("inf") else repr(float(b)), n) for b, n in hist["buckets"]]
                family.add_metric([name], buckets, hist["sum"])
            cache = row.get("cache")
            if cache:
                labels = [name, cache["kind"]]
                hits.add_metric(labels, cache["hits"])
                misses.add_metric(labels, cache["misses"])
                cache_errors.add_metric(labels, cache["errors"])
                entries.add_metric(labels, cache["size"])
        yield from (calls, texts, tokens, errors, retries, fallbacks, in_flight, latency, batch, micro_texts, micro_callers)
        yield from (hits, misses, cache_errors, entries)


class ServerMetrics:
    """One registry per manager served: request metrics of both servers plus generator metrics."""

    def __init__(self, manager: EmbeddingGeneratorManager) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.requests = Counter("agent_embeddings_requests", "Requests answered, by status",
                                ["server", "route", "status"], registry=r)
        self.errors = Counter("agent_embeddings_request_errors", "Requests not answered with success, by cause",
                              ["server", "type"], registry=r)
        self.latency = Histogram("agent_embeddings_request_duration_seconds", "Request latency",
                                 ["server", "route"], buckets=LATENCY_BUCKETS_S, registry=r)
        self.batch = Histogram("agent_embeddings_request_batch_size", "Texts per embedding request",
                               ["server"], buckets=BATCH_BUCKETS, registry=r)
        self.in_flight = Gauge("agent_embeddings_requests_in_flight", "Requests being worked on",
                               ["server"], registry=r)
        r.register(_ManagerCollector(manager))
        # A labelled child looked up per request costs a lock, a tuple of str() and the label
        # checks (~2 us); the label sets are small (server, route, status, error type), so the
        # children are kept here.
        self._children: dict[tuple[Any, ...], Any] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, looked up once."""
        key = (id(metric), *labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def request_done(
        self, server: str, route: str, status: str, seconds: float, *,
        method: str = "", texts: int | None = None, error_type: str | None = None,
    ) -> None:
        """Count one answered request (``error_type``: its cause when it is not a success) and log it."""
        self.child(self.requests, server, route, status).inc()
        self.child(self.latency, server, route).observe(seconds)
        if error_type is not None:
            self.child(self.errors, server, error_type).inc()
        if ACCESS_LOG.isEnabledFor(logging.INFO):
            ACCESS_LOG.info(
                "%s %s%s %s texts=%s %.1fms%s", server, f"{method} " if method else "", route, status,
                "-" if texts is None else texts, seconds * 1e3, f" error={error_type}" if error_type else "",
            )

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


def start_metrics_server(metrics: ServerMetrics, host: str, port: int) -> tuple[Any, threading.Thread, int]:
    """Serve ``/metrics`` on ``host:port`` from a daemon thread; returns (server, thread, bound port)."""
    from prometheus_client import start_http_server

    server, thread = start_http_server(port, addr=host, registry=metrics.registry)
    return server, thread, server.server_address[1]
