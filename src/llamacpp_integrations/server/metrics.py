"""Prometheus metrics of one server (its own registry): requests by endpoint and status,
tokens in and out, queue depth and active slots per model, time to first token and
inter-token latency."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "llamacpp_requests",
            "HTTP requests by endpoint and status",
            ["endpoint", "status"],
            registry=r,
        )
        self.prompt_tokens = Counter(
            "llamacpp_prompt_tokens", "Prompt tokens processed", ["model"], registry=r
        )
        self.completion_tokens = Counter(
            "llamacpp_completion_tokens", "Tokens generated", ["model"], registry=r
        )
        self.queue_depth = Gauge(
            "llamacpp_queue_depth", "Requests waiting for a slot", ["model"], registry=r
        )
        self.active_slots = Gauge(
            "llamacpp_active_slots", "Slots serving a request", ["model"], registry=r
        )
        self.ttft = Histogram(
            "llamacpp_time_to_first_token_seconds",
            "Time to first token",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.itl = Histogram(
            "llamacpp_inter_token_latency_seconds",
            "Mean time between generated tokens",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )

    def request(self, endpoint: str, status: int) -> None:
        self.requests.labels(endpoint, str(status)).inc()

    def tokens(self, model: str, prompt: int, completion: int) -> None:
        self.prompt_tokens.labels(model).inc(prompt)
        self.completion_tokens.labels(model).inc(completion)

    def set_load(self, model: str, inflight: int, slots: int) -> None:
        self.active_slots.labels(model).set(min(inflight, slots))
        self.queue_depth.labels(model).set(max(0, inflight - slots))

    def first_token(self, model: str, seconds: float) -> None:
        self.ttft.labels(model).observe(seconds)

    def inter_token(self, model: str, seconds: float) -> None:
        self.itl.labels(model).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
