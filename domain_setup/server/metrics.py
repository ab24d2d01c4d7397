"""What a hospital's monitoring scrapes: GET /pneumosyft/metrics, Prometheus text format.

    pneumosyft_http_responses_total{status}        responses by HTTP status code
    pneumosyft_gate_refusals_total{reason}         requests the token gate refused
    pneumosyft_approvals_total{outcome}            approvals (approved / refused)
    pneumosyft_sandbox_runs_total{outcome}         sandbox runs by how they ended
    pneumosyft_sandbox_run_seconds                 their durations (a histogram)
    pneumosyft_rounds_aggregated_total             secure rounds this domain aggregated
    pneumosyft_privacy_epsilon_spent{dataset}      ε spent on the dataset, summed over
                                                   researchers (each composed at the
                                                   dataset's δ), read from the ledger
    pneumosyft_privacy_accounts{dataset}           researchers with releases or grants there

Counts come from the audit log's events as they are written (`observe`, an observer of
`AuditLog`), so a metric says nothing the audit log does not. Every label takes its
values from a fixed set (a status code, a refusal kind, an outcome) or is a dataset the
admin named: none names a researcher, a request, a token or a file, and however many
different requests a flood sends, the number of series stays bounded. Reading it takes a
token whose role may ``read_audit``: it is a summary of the audit log.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from fastapi import APIRouter, Request, Response  # module level: FastAPI reads the
# route's annotations (postponed by `from __future__`) in this module's namespace

REFUSAL_KINDS = {400: "bad request", 401: "invalid token", 403: "forbidden",
                 413: "too large"}
RUN_OUTCOMES = ("ok", "refused", "withheld")  # anything else a run ends in is "failed"
RUN_SECONDS_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)


def refusal_kind(status: Any) -> str:
    """The gate refusal's label: a kind from its status code, "other" beyond them."""
    try:
        return REFUSAL_KINDS.get(int(status), "other")
    except (TypeError, ValueError):
        return "other"


class DomainMetrics:
    """The domain's metrics in a registry of their own (not prometheus_client's global
    one: two domains in one test process stay apart).

        metrics = DomainMetrics(epsilon_by_dataset=lambda: {"xray": (1.9, 2)})
        audit.observers.append(metrics.observe)
        text = metrics.exposition()
    """

    def __init__(self, epsilon_by_dataset: Callable[[], dict[str, tuple[float, int]]]):
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        self.responses = Counter("pneumosyft_http_responses", "HTTP responses by status code",
                                 ["status"], registry=self.registry)
        self.refusals = Counter("pneumosyft_gate_refusals",
                                "Requests the token gate refused, by kind", ["reason"],
                                registry=self.registry)
        self.approvals = Counter("pneumosyft_approvals", "Request approvals by outcome",
                                 ["outcome"], registry=self.registry)
        self.runs = Counter("pneumosyft_sandbox_runs", "Sandbox runs by outcome", ["outcome"],
                            registry=self.registry)
        self.run_seconds = Histogram("pneumosyft_sandbox_run_seconds",
                                     "Seconds a sandbox run took", registry=self.registry,
                                     buckets=RUN_SECONDS_BUCKETS)
        self.rounds = Counter("pneumosyft_rounds_aggregated",
                              "Secure rounds this domain aggregated (single rounds and "
                              "federated jobs' rounds)", registry=self.registry)
        self.registry.register(_PrivacyCollector(epsilon_by_dataset))

    def observe(self, entry: dict) -> None:
        """Count one audit event (called for every entry the audit log writes, and for
        every anonymous refusal, written or only counted)."""
        action, outcome = entry.get("action"), entry.get("outcome")
        if action == "auth" and outcome == "refused":
            self.refusals.labels(refusal_kind(entry.get("status"))).inc()
        elif action == "request.approve":
            self.approvals.labels("approved" if outcome == "ok" else "refused").inc()
        elif action == "execution":
            self.runs.labels(outcome if outcome in RUN_OUTCOMES else "failed").inc()
            seconds = _number(entry.get("seconds"))
            if seconds is not None:
                self.run_seconds.observe(seconds)
        elif action == "federation.aggregate" and outcome == "ok":  # a job's rounds too
            self.rounds.inc()

    def responded(self, status: int) -> None:
        """Count one HTTP response."""
        self.responses.labels(str(int(status)) if 100 <= int(status) <= 599 else "other").inc()

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class _PrivacyCollector:
    """ε spent and accounts per dataset, read from the privacy ledger at each scrape."""

    def __init__(self, read: Callable[[], dict[str, tuple[float, int]]]):
        self.read = read

    def describe(self) -> Iterable[Any]:
        return []  # described by collecting; nothing to check at registration

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import GaugeMetricFamily

        spent = GaugeMetricFamily("pneumosyft_privacy_epsilon_spent",
                                  "Epsilon spent on the dataset, summed over researchers",
                                  labels=["dataset"])
        accounts = GaugeMetricFamily("pneumosyft_privacy_accounts",
                                     "Researchers with releases or grants on the dataset",
                                     labels=["dataset"])
        for dataset, (epsilon, count) in sorted(self.read().items()):
            spent.add_metric([dataset], epsilon)
            accounts.add_metric([dataset], count)
        yield spent
        yield accounts


def epsilon_by_dataset(ledger: Any, policies: Any) -> dict[str, tuple[float, int]]:
    """{dataset: (ε spent summed over researchers, researchers)} from the ledger, each
    account composed at its dataset's δ in the policies in force (1e-5 if none)."""
    datasets = policies.current.privacy.datasets
    found: dict[str, tuple[float, int]] = {}
    for email, dataset in ledger.owners():
        rules = datasets.get(dataset)
        account = ledger.account(email, dataset, delta=rules.delta if rules else 1e-5)
        epsilon, count = found.get(dataset, (0.0, 0))
        found[dataset] = (epsilon + float(account.spent), count + 1)
    return found


class ResponseCounter:
    """ASGI middleware counting every HTTP response's status into `metrics`."""

    def __init__(self, app: Any, metrics: DomainMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def counted(message: dict) -> None:
            if message["type"] == "http.response.start":
                self.metrics.responded(int(message["status"]))
            await send(message)

        return await self.app(scope, receive, counted)


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number >= 0 else None


def make_metrics_router(gate: Any, metrics: DomainMetrics) -> APIRouter:
    """GET /metrics (under /pneumosyft): the exposition, for a role that may read_audit."""
    from prometheus_client import CONTENT_TYPE_LATEST

    from domain_setup.server.routes import route_caller

    router = APIRouter()

    @router.get("/metrics")
    def read_metrics(request: Request) -> Response:
        route_caller(gate, request, "read_audit", "read the metrics")
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return router
