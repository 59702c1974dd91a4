"""The server's Prometheus metrics (GET /metrics), in a registry of its own."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

SECONDS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


class Metrics:
    """Requests by status, the queue's depth and wait, end-to-end latency, rows per layer call, exits
    per layer."""

    def __init__(self, batch_size):
        self.registry = r = CollectorRegistry()
        self.requests = Counter("pabee_requests", "Requests answered, by HTTP status", ["status"], registry=r)
        self.queue_depth = Gauge("pabee_queue_depth", "Examples waiting to join the engine", registry=r)
        self.queue_wait = Histogram("pabee_queue_wait_seconds", "Seconds a request waited to join the engine",
                                    buckets=SECONDS, registry=r)
        self.latency = Histogram("pabee_request_seconds", "Seconds from a request's arrival to its answer",
                                 buckets=SECONDS, registry=r)
        rows = sorted({1, 2, 4, 8, 16, 32, 64, 128, 256, batch_size})
        self.rows = Histogram("pabee_rows_per_layer_call", "Real rows of each layer call",
                              buckets=[b for b in rows if b <= batch_size], registry=r)
        self.exits = Counter("pabee_exits", "Examples answered, by exit layer", ["layer"], registry=r)
