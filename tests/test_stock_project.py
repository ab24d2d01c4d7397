"""PySyft's own tutorial route, `sy.Project(...).send()`, works through the gate with a stock
syft 0.9.5 client, and the domain never calls out to a route a researcher supplies."""

from __future__ import annotations

import pytest

from common import syft_compat

pytestmark = pytest.mark.domain


def _count_rows(images):
    return {"n": len(images)}


def test_stock_client_sends_a_project_with_a_code_request(hospital, ada):
    import syft as sy

    hospital.admin.syft_client()  # another account's client in this process, as in a notebook

    train = ada.datasets["xray"].assets["train_images"]
    function = sy.syft_function_single_use(images=train)(_count_rows)
    with syft_compat.muted():
        project = sy.Project(name="pneumonia study", description="count the images",
                             members=[ada])
        project.create_code_request(function, ada)
        sent = project.send()
    assert not syft_compat.is_syft_error(sent), sent
    assert sent.name == "pneumonia study"
    requests = [r for r in hospital.admin.requests() if r.function == "_count_rows"]
    assert requests and requests[-1].requester == "ada@pneumosyft-research.org"


def test_a_route_elsewhere_is_refused_not_followed(hospital, ada):
    import syft as sy
    from syft.service.network.routes import HTTPServerRoute

    with syft_compat.muted():
        project = sy.Project(name="detour", description="route to another host",
                             members=[ada])
        project.leader_server_route = HTTPServerRoute(host_or_ip="127.0.0.1", port=9,
                                                      protocol="http")
        with pytest.raises(Exception) as refused:  # what send() calls, with the route kept
            ada.api.services.project.create_project(project=project)
    assert "does not connect out to 127.0.0.1:9" in syft_compat.error_text(refused.value)


def test_a_python_route_is_refused_before_syft_builds_a_worker_from_it(hospital, ada):
    """A Python route carries worker settings (a signing key, a database file) from which
    syft would build a Worker inside the server: refused."""
    from pathlib import Path

    import syft as sy
    from syft.server.credentials import SyftSigningKey
    from syft.server.worker_settings import WorkerSettings
    from syft.service.network.routes import PythonServerRoute
    from syft.store.db.sqlite import SQLiteDBConfig
    from syft.types.uid import UID
    from syft.abstract_server import ServerSideType, ServerType

    settings = WorkerSettings(id=UID(), name="planted", server_type=ServerType.DATASITE,
                              server_side_type=ServerSideType.HIGH_SIDE,
                              signing_key=SyftSigningKey.generate(),
                              db_config=SQLiteDBConfig(filename="planted.db", path=Path("planted")))
    with syft_compat.muted():
        project = sy.Project(name="python route", description="a worker built in the server",
                             members=[ada])
        project.leader_server_route = PythonServerRoute(worker_settings=settings)
        with pytest.raises(Exception) as refused:
            ada.api.services.project.create_project(project=project)
    assert "follows HTTP routes to itself only" in syft_compat.error_text(refused.value)
