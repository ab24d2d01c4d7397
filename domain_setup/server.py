"""The hospital's syft datasite, served over HTTP behind the token gate.

`serve(state)` runs in the foreground: it rebuilds the same syft server from the
state directory (same id, same signing key, same database and blob store), puts
the JWT gate in front of every route, and serves it with uvicorn until SIGTERM.
`python -m domain_setup start` runs this in a detached child process.
"""

from __future__ import annotations

import logging
import os
import sys
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from common.errors import DomainError
from domain_setup.state import DomainConfig, StateDir

ADMIN_NAME = "Hospital Admin"
log = logging.getLogger("pneumosyft.server")


def _project_root() -> Path:
    return Path(__file__).resolve().parent.parent


def postgres_config(db_url: str) -> Any:
    """syft's PostgresDBConfig from a URL; a password-less URL (trust, peer auth) is fine."""
    from urllib.parse import unquote, urlparse

    from syft.store.db.postgres import PostgresDBConfig

    parsed = urlparse(db_url)
    return PostgresDBConfig(host=parsed.hostname, port=parsed.port or 5432,
                            user=unquote(parsed.username or "postgres"),
                            password=unquote(parsed.password or ""),
                            database=parsed.path.lstrip("/"))


def build_worker(state: StateDir, config: DomainConfig) -> Any:
    """Construct the syft Datasite with the identity and stores of `state`."""
    # syft keeps scratch files (locks, temp dbs) under $TMP/$SYFT_TEMP_ROOT/<id>;
    # an absolute SYFT_TEMP_ROOT keeps them inside the state directory.
    os.environ["SYFT_TEMP_ROOT"] = str(state.syft_dir)
    from nacl.signing import SigningKey
    from syft.server.datasite import Datasite
    from syft.server.credentials import SyftSigningKey
    from syft.store.blob_storage.on_disk import (
        OnDiskBlobStorageClientConfig,
        OnDiskBlobStorageConfig,
    )
    from syft.store.db.sqlite import SQLiteDBConfig
    from syft.types.uid import UID

    identity = state.load_or_create_identity()
    password = state.load_or_create_admin_password()
    if config.db_url:
        db_config = postgres_config(config.db_url)
    else:
        db_config = SQLiteDBConfig(filename="domain.sqlite", path=state.db_dir)
    blob_config = OnDiskBlobStorageConfig(
        client_config=OnDiskBlobStorageClientConfig(base_directory=state.blob_dir),
        min_blob_size=0,
    )
    return Datasite(
        name=config.name,
        id=UID(identity.server_id),
        signing_key=SyftSigningKey(signing_key=SigningKey(bytes.fromhex(identity.signing_key))),
        db_config=db_config,
        blob_storage_config=blob_config,
        root_email=config.admin_email,
        root_username=ADMIN_NAME,
        root_password=password,
        deployment_type="remote",
        reset=False,
        dev_mode=False,
        in_memory_workers=True,
        n_consumers=0,
        create_producer=False,
    )


def build_app(state: StateDir, config: DomainConfig, worker: Any) -> Any:
    """The FastAPI app: syft's routes under /api/v2, ours under /pneumosyft, the gate in front."""
    from fastapi import APIRouter, FastAPI
    from syft.server.routes import make_routes

    from domain_setup.admin_session import write_connection
    from domain_setup.gate import TokenGate
    from domain_setup.domain_api import make_domain_router

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        try:
            yield
        finally:
            worker.stop()

    app = FastAPI(title=config.name, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    syft_router = APIRouter()
    syft_router.include_router(make_routes(worker=worker))
    app.include_router(syft_router, prefix="/api/v2")
    gate = TokenGate.for_domain(state, config, worker)
    app.include_router(make_domain_router(state, config, worker, gate), prefix="/pneumosyft")

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    gate.wrap(app)
    write_connection(state, config, gate.authority)
    return gate


def serve(state: StateDir) -> None:
    """Run the domain in the foreground until SIGTERM/SIGINT."""
    import uvicorn

    config = state.load_config()
    if str(_project_root()) not in sys.path:
        # approved training plans import the hospital's vetted modules (common.*)
        sys.path.insert(0, str(_project_root()))
    from domain_setup import syft_patches

    syft_patches.apply_all()
    worker = build_worker(state, config)
    # syft logs exceptions raised by approved code at ERROR; the hospital admin needs
    # them in the domain log (the researcher only sees "contact the Server Admin")
    logging.getLogger("syft.service.code.user_code").setLevel(logging.ERROR)
    app = build_app(state, config, worker)
    state.pid_path.write_text(str(os.getpid()))
    try:
        uvicorn.run(app, host=config.host, port=config.port, log_level="warning",
                    access_log=False, timeout_keep_alive=30)
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


if __name__ == "__main__":
    sys.exit(main())
