"""The hospital's syft datasite, served over HTTP behind the token gate.

`serve(state)` runs in the foreground: it rebuilds the same syft server from the
state directory (same id, same signing key, same database and blob store), puts
the JWT gate in front of every route, and serves it with uvicorn until SIGTERM.
`python -m domain_setup start` runs this in a detached child process
(`python -m domain_setup.server STATE_DIR`).
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
from contextlib import asynccontextmanager
from typing import Any

from common import syft_compat
from common.errors import DomainError
from domain_setup import PROJECT_ROOT, operating_limits
from domain_setup.state import DomainConfig, StateDir

ADMIN_NAME = "Hospital Admin"
log = logging.getLogger("pneumosyft.server")


def postgres_settings(db_url: str) -> dict:
    """syft's PostgreSQL settings from a URL; a password-less URL (trust, peer auth) is fine."""
    from urllib.parse import unquote, urlparse

    parsed = urlparse(db_url)
    return {"host": parsed.hostname, "port": parsed.port or 5432,
            "user": unquote(parsed.username or "postgres"),
            "password": unquote(parsed.password or ""), "database": parsed.path.lstrip("/")}


def build_worker(state: StateDir, config: DomainConfig) -> Any:
    """Construct the syft Datasite with the identity and stores of `state`."""
    # syft keeps scratch files (locks, temp dbs) under $TMP/$SYFT_TEMP_ROOT/<id>;
    # an absolute SYFT_TEMP_ROOT keeps them inside the state directory.
    os.environ["SYFT_TEMP_ROOT"] = str(state.syft_dir)
    identity = state.load_or_create_identity()
    return syft_compat.build_datasite(
        name=config.name, server_id=identity.server_id, signing_key_hex=identity.signing_key,
        sqlite_dir=state.db_dir, postgres=postgres_settings(config.db_url) if config.db_url else None,
        blob_dir=state.blob_dir, root_email=config.admin_email, root_name=ADMIN_NAME,
        root_password=state.load_or_create_admin_password())


def build_app(state: StateDir, config: DomainConfig, worker: Any, *, policies: Any,
              audit: Any, overrides: Any, ledger: Any, executor: Any, pending: Any) -> Any:
    """The FastAPI app: syft's routes under /api/v2, ours under /pneumosyft, the gate in front
    of every route (``app.state.gate``), all deciding on the same policy snapshot; a 5xx
    while the disk is full becomes one line saying so (`server/health.py`)."""
    from fastapi import APIRouter, FastAPI

    from domain_setup.aggregation_key import load_private_key_if_enabled
    from domain_setup.server.aggregation_route import make_aggregation_router
    from domain_setup.server.blob_upload import make_blob_router
    from domain_setup.server.cli_credentials import write_connection
    from domain_setup.server.federation_routes import make_federation_router
    from domain_setup.server.gate import GateMiddleware, TokenGate
    from domain_setup.server.health import DEFAULT_MIN_FREE_MB, DiskFullResponses, disk_problems
    from domain_setup.server.inference_routes import make_inference_router
    from domain_setup.server.job_ledger import JobLedger
    from domain_setup.server.job_routes import make_job_router
    from domain_setup.server.job_rounds import JobRounds
    from domain_setup.server.metrics import (
        DomainMetrics,
        ResponseCounter,
        epsilon_by_dataset,
        make_metrics_router,
    )
    from domain_setup.server.run_routes import make_run_router
    from domain_setup.server.privacy_routes import make_privacy_router
    from domain_setup.server.routes import install_refusal_handler, make_domain_router

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # each run waiting in the sandbox queue holds one worker thread: room for all of
        # them, and as many again for everything else (/health, reviews, logins)
        import anyio.to_thread

        queue = executor.queue.describe()
        limiter = anyio.to_thread.current_default_thread_limiter()
        limiter.total_tokens = max(limiter.total_tokens,
                                   queue["max_queued"] + queue["max_running"] + 40)
        try:
            yield
        finally:
            app.state.console.sessions.close_all()  # their tokens are revoked
            worker.stop()

    app = FastAPI(title=config.name, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    syft_router = APIRouter()
    syft_router.include_router(syft_compat.syft_routes(worker))
    app.include_router(syft_router, prefix="/api/v2")
    gate = TokenGate.for_domain(state, config, worker, policies=policies, audit=audit)
    app.include_router(make_domain_router(state, config, worker, gate, overrides, ledger,
                                          pending), prefix="/pneumosyft")
    app.include_router(make_privacy_router(worker, gate, ledger),
                       prefix="/pneumosyft/privacy")
    app.include_router(make_blob_router(worker, gate), prefix="/pneumosyft/blob")
    app.include_router(make_aggregation_router(gate, executor,
                                               lambda: load_private_key_if_enabled(state)),
                       prefix="/pneumosyft/federation")
    app.include_router(make_federation_router(gate), prefix="/pneumosyft/federation")
    app.include_router(make_run_router(gate, executor.queue), prefix="/pneumosyft/runs")
    app.include_router(make_inference_router(state, worker, gate, executor.approvals,
                                             lambda: load_private_key_if_enabled(state)),
                       prefix="/pneumosyft/inference")
    app.include_router(make_job_router(gate, JobRounds(
        worker=worker, executor=executor, jobs=JobLedger.of_state(state.root), audit=audit,
        private_key=lambda: load_private_key_if_enabled(state))), prefix="/pneumosyft/jobs")
    install_refusal_handler(app)
    min_free_mb = operating_limits.get(config.extra, "min_free_disk_mb", DEFAULT_MIN_FREE_MB)

    checked = {"at": 0.0, "problems": []}

    @app.get("/health")
    def health() -> dict:
        # open to anyone: the state of the machine, nothing of anyone's runs; the disk is
        # probed at most once a second, however often anyone asks
        if time.monotonic() - checked["at"] >= 1.0:
            checked.update(at=time.monotonic(),
                           problems=disk_problems(state.root, min_free_mb=min_free_mb))
        problems = checked["problems"]
        return {"status": "degraded" if problems else "ok", "problems": problems}

    metrics = DomainMetrics(lambda: epsilon_by_dataset(ledger, policies))
    audit.observers.append(metrics.observe)
    app.include_router(make_metrics_router(gate, metrics), prefix="/pneumosyft")

    from domain_setup.server.console import install_console

    console = install_console(app, state, config, gate)  # /admin/: its own login
    app.add_middleware(GateMiddleware, gate=gate)
    app.add_middleware(DiskFullResponses, state_root=state.root, min_free_mb=min_free_mb,
                       syft_error_body=lambda text: syft_compat.signed_syft_error(worker, text))
    app.add_middleware(ResponseCounter, metrics=metrics)  # outermost: every response
    app.state.gate = gate
    app.state.console = console
    write_connection(state, config, gate.authority)
    return app


class SandboxPool:
    """One `Sandbox` per set of limits and kind (its set-up, the seccomp filters, is
    reused). For the limits asked for last, the full sandbox keeps a warm spare (numpy and
    torch imported, never used by anyone) and so does the light one (numpy only: the
    aggregation, which must not wait for a spare importing torch after a training run);
    the others run cold."""

    def __init__(self, torch_threads: int | None):
        self.torch_threads = torch_threads
        self._by_limits: dict = {}
        self._lock = threading.Lock()
        self._warm_limits: Any = None
        atexit.register(self.close)

    def __call__(self, limits: Any, *, light: bool = False) -> Any:
        from domain_setup.sandbox import Sandbox

        with self._lock:
            if self._warm_limits != limits:
                if self._warm_limits is not None:  # approval.yaml's limits changed
                    for kind in (False, True):
                        self._by_limits[(self._warm_limits, kind)].close()
                for kind in (False, True):
                    self._by_limits[(limits, kind)] = Sandbox(
                        limits, vetted_packages=[PROJECT_ROOT / "common"],
                        torch_threads=self.torch_threads, warm=True, preload_torch=not kind)
                self._warm_limits = limits
            return self._by_limits[(limits, light)]

    def close(self) -> None:
        """Kill the spares (at exit)."""
        with self._lock:
            for sandbox in self._by_limits.values():
                sandbox.close()

    def check(self, limits: Any) -> None:
        """Refuse to start (DomainError) when the sandbox cannot be created here."""
        from domain_setup.sandbox import SandboxError

        try:
            self(limits).check_available()
            self(limits, light=True).prewarm()
        except SandboxError as exc:
            raise DomainError(f"the sandbox for researcher code is unavailable: {exc} "
                              "(the domain never runs submitted code without it)") from None


def run_queue(config: DomainConfig) -> Any:
    """The sandbox queue with this domain's budget, concurrency and queue length."""
    from domain_setup.server import run_queue as q

    extra = config.extra
    return q.RunQueue(
        memory_budget_mb=operating_limits.get(extra, "sandbox_memory_budget_mb",
                                              q.default_memory_budget_mb()),
        max_running=operating_limits.get(extra, "max_concurrent_runs", q.default_max_running()),
        max_waiting=operating_limits.get(extra, "max_queued_runs", q.DEFAULT_MAX_WAITING))


def plan_executor(state: StateDir, config: DomainConfig, policies: Any, audit: Any,
                  sandboxes: SandboxPool, worker: Any, ledger: Any, approvals: Any) -> Any:
    """The sandbox dispatch with this domain's `--plan-timeout` / `--plan-memory-mb`, its
    privacy ledger, its ledger of secure-aggregation rounds, its approvals and its queue."""
    from domain_setup.aggregation_key import published_public_key
    from domain_setup.server.execution import PlanExecutor
    from domain_setup.server.round_ledger import RoundLedger

    return PlanExecutor(policies=policies, config_extra=dict(config.extra),
                        sandbox_factory=sandboxes, audit=audit, worker=worker, ledger=ledger,
                        rounds=RoundLedger.of_state(state.root), approvals=approvals,
                        queue=run_queue(config),
                        own_aggregation_key=lambda: published_public_key(state))


def _closing_idle_tls_at_once() -> type:
    """uvicorn's HTTP protocol, but a stop drops an idle TLS keep-alive connection at once:
    a graceful TLS close waits up to 30 s for the client's close_notify, which an idle
    client's pool never sends, and so held every stop for 30 s."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    class ClosingIdleAtOnce(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
        def shutdown(self) -> None:
            if self.cycle is None or self.cycle.response_complete:
                self.transport.abort()
            else:
                super().shutdown()

    return ClosingIdleAtOnce


def serve(state: StateDir) -> None:
    """Run the domain in the foreground until SIGTERM/SIGINT."""
    import uvicorn

    config = state.load_config()
    # the sandbox dispatch logs what failed inside a plan; the hospital admin needs it in
    # the domain log (the researcher only gets one line without values from inside)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("pneumosyft.execution").setLevel(logging.INFO)
    if str(PROJECT_ROOT) not in sys.path:
        # approved training plans import the hospital's vetted modules (common.*)
        sys.path.insert(0, str(PROJECT_ROOT))
    from domain_setup.policy.approval import sandbox_limits
    from domain_setup.policy.snapshot import LivePolicies, load_domain_policies
    from domain_setup.server import approval_guard, syft_patches
    from domain_setup.server.audit import DEFAULT_KEEP, DEFAULT_MAX_BYTES, AuditLog
    from domain_setup.aggregation_key import published_public_key
    from domain_setup.exposure import check_exposure
    from domain_setup import tls_certificate
    from domain_setup.server.approval_ledger import ApprovalLedger
    from domain_setup.server.privacy_ledger import PrivacyLedger
    from domain_setup.server.pending_requests import PendingRequests
    from domain_setup.server.recovery import recover
    from domain_setup.sandbox.cgroups import CgroupHost

    exposed = check_exposure(config)  # again here: a foreground or hand-edited start
    expiring = tls_certificate.ensure_certificate(state, config)
    policies = LivePolicies(load_domain_policies(config, state.root))
    audit = AuditLog(state.root, max_bytes=operating_limits.get(
        config.extra, "audit_max_mb", DEFAULT_MAX_BYTES // 2**20) * 2**20,
        keep=operating_limits.get(config.extra, "audit_keep", DEFAULT_KEEP))
    if expiring:
        logging.getLogger("pneumosyft.exposure").warning(expiring)
    if exposed:
        logging.getLogger("pneumosyft.exposure").warning(exposed)
        audit.record("domain", "domain.insecure_http", outcome="warning", host=config.host,
                     port=str(config.port))
    sandboxes = SandboxPool(torch_threads=int(os.environ.get("OMP_NUM_THREADS") or 0) or None)
    # no sandbox, no domain: nothing submitted ever runs in this process
    sandboxes.check(sandbox_limits(policies.current.approval, config.extra))
    worker = build_worker(state, config)
    syft_compat.wait_for_sqlite_locks(worker)
    ledger = PrivacyLedger.of_state(state.root)  # one per server: executor, guard, routes
    approvals = ApprovalLedger.of_state(state.root)  # written by the guard, read by the dispatch
    # what a crash of the previous server left: runs, sandboxes, blobs
    recover(approvals=approvals, ledger=ledger, audit=audit, blob_dir=state.blob_dir,
            cgroups=CgroupHost.detect(), worker=worker)
    executor = plan_executor(state, config, policies, audit, sandboxes, worker, ledger, approvals)
    run_memory_mb = executor.limits().memory_mb
    if run_memory_mb > executor.queue.memory_budget_mb:
        raise DomainError(f"each run may use {run_memory_mb} MB, more than the "
                          f"sandbox memory budget of {executor.queue.memory_budget_mb} MB: raise "
                          f"--sandbox-memory-budget-mb or lower --plan-memory-mb")
    syft_patches.apply_all(config.host, config.port, executor)
    overrides = approval_guard.Overrides()
    pending = PendingRequests.scan(worker)  # the undecided requests, as syft's store has them
    approval_guard.bind_verdicts(worker, policies, overrides, audit, ledger, approvals,
                                 lambda: published_public_key(state), pending)
    app = build_app(state, config, worker, policies=policies, audit=audit, overrides=overrides,
                    ledger=ledger, executor=executor, pending=pending)
    state.pid_path.write_text(str(os.getpid()))
    try:
        tls = config.extra.get(tls_certificate.TLS_KEY) or {}
        uvicorn.run(app, host=config.host, port=config.port, log_level="warning",
                    access_log=False, timeout_keep_alive=30,
                    ssl_certfile=tls.get("cert"), ssl_keyfile=tls.get("key"),
                    http=_closing_idle_tls_at_once() if tls else "auto")
    finally:
        if state.read_pid() == os.getpid():
            state.pid_path.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the server child process: `python -m domain_setup.server STATE_DIR`."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m domain_setup.server STATE_DIR", file=sys.stderr)
        return 2
    try:
        serve(StateDir(argv[0]))
    except DomainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


