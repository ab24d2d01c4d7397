"""Approved code runs in the sandbox on a live domain: each attack family, approved by the
admin with --override, really runs (it returns a value from inside) and fails inside.

The domain runs with `--plan-timeout 30 --plan-memory-mb 2048`, the limits at which a
one-epoch small_cnn plan on a few hundred images must still fit, sandbox start included.
"""

from __future__ import annotations

import base64
import pickle
import socket
import threading
import uuid

import pytest

from common.errors import DomainError
from conftest import ACCOUNTS_YAML, OTHER_RESEARCHER, RESEARCHER, SMALL_SET
from demos.local_domain import TRUSTED, LocalDomain
from scientist import TrainingPlan, connect
from scientist.plans import train_xray_plan
from scientist.submission import run_approved, split_assets, submit_plan

pytestmark = pytest.mark.domain


@pytest.fixture(scope="module")
def sandboxed(tmp_path_factory):
    """A domain with tight plan limits, a small X-ray set, Ada's and Grace's clients."""
    root = tmp_path_factory.mktemp("sandboxed")
    domain = LocalDomain.start_new("Sandbox General", root / "state", extra_args=(
        *TRUSTED, "--plan-timeout", "30", "--plan-memory-mb", "2048"))
    try:
        domain.cli("upload", "synthetic", "--name", "xray", *SMALL_SET)
        domain.cli("accounts", "apply", str(ACCOUNTS_YAML))
        ada = connect(connection_file=domain.researcher_file(RESEARCHER))
        grace = connect(connection_file=domain.researcher_file(OTHER_RESEARCHER))
        yield domain, ada, grace
    finally:
        domain.stop()


def approved_run(domain: LocalDomain, client, plan, constants: dict | None = None):
    """Submit `plan` on the train split, approve it with an override, run it."""
    train = split_assets(client, "xray", "train")
    submission = submit_plan(client, plan, inputs={"images": train["images"]},
                             constants=constants or {}, reason="containment test")
    domain.cli("review", "approve", submission.request_id, "--override", "--reason",
               "containment test: the sandbox must hold")
    return run_approved(client, submission)


# -- the attacks (module level: syft reads a function's source from its file) ------------

def read_state_dir(images, paths):
    import os
    found = {}
    for path in paths["files"]:
        try:
            with open(path, "rb") as handle:
                found[path] = handle.read(64).hex()
        except OSError as exc:
            found[path] = f"refused: {type(exc).__name__}"
    return {"ran": True, "uid": os.getuid(), "found": found,
            "visible_roots": sorted(os.listdir("/"))}


def read_environment(images):
    import os
    return {"ran": True, "environ": dict(os.environ),
            "proc_1": open("/proc/1/cmdline", "rb").read().decode(errors="replace")}


def write_outside(images, paths):
    written = {}
    for path in paths["files"]:
        try:
            with open(path, "w") as handle:
                handle.write("owned")
            written[path] = "written"
        except OSError as exc:
            written[path] = f"refused: {type(exc).__name__}"
    return {"ran": True, "written": written}


def unpickle_payload(images, payload):
    import base64
    import pickle
    try:
        value = pickle.loads(base64.b64decode(payload["b64"]))
    except Exception as exc:
        value = f"raised {type(exc).__name__}"
    return {"ran": True, "value": str(value)}


def spawn_process(images):
    import os
    import subprocess
    outcomes = {}
    try:
        outcomes["subprocess"] = subprocess.run(["/bin/true"]).returncode
    except OSError as exc:
        outcomes["subprocess"] = f"refused: {exc.errno}"
    try:
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        outcomes["fork"] = "forked"
    except OSError as exc:
        outcomes["fork"] = f"refused: {exc.errno}"
    outcomes["system"] = os.system("true")
    return {"ran": True, "outcomes": outcomes}


def network_egress(images, target):
    import socket
    try:
        with socket.create_connection(("127.0.0.1", int(target["port"])), timeout=3) as conn:
            conn.sendall(b"private pixels")
        sent = "sent"
    except OSError as exc:
        sent = f"refused: {type(exc).__name__} {exc.errno}"
    return {"ran": True, "sent": sent}


def look_for_syft(images):
    import sys
    loaded = sorted(name for name in sys.modules if name.split(".")[0] in ("syft", "domain_setup"))
    try:
        import domain_setup  # noqa: F401
        reachable = "imported"
    except ImportError:
        reachable = "not importable"
    return {"ran": True, "loaded": loaded, "domain_setup": reachable}


def plant_global_hook(images):
    import torch
    torch.spy_batches = []
    torch.nn.modules.module.register_module_forward_hook(
        lambda module, inputs, output: torch.spy_batches.append(inputs[0].shape))
    return {"ran": True, "planted": True}


def collect_from_hook(images):
    import torch
    return {"ran": True, "collected": len(getattr(torch, "spy_batches", [])),
            "hooks": len(torch.nn.modules.module._global_forward_hooks)}


def loop_forever(images):
    while True:
        pass


def allocate_3gb(images):
    import numpy as np
    block = np.ones(3 * 1024 ** 3 // 8)
    return {"ran": True, "sum": float(block.sum())}


def return_too_much(images):
    import numpy as np
    return {"ran": True, "blob": np.zeros(4 * 1024 * 1024, dtype=np.uint8)}


def return_a_tensor(images):
    import torch
    return {"ran": True, "tensor": torch.zeros(3)}


# -- the tests ----------------------------------------------------------------------------

def test_state_directory_and_checkout_are_invisible(sandboxed):
    domain, ada, _ = sandboxed
    state = domain.state.root
    files = [str(state / "admin_password"), str(state / "connection.json"),
             str(state / "account_passwords.json"), str(state / "keys" / "jwt_private.pem"),
             str(state / "identity.json"), str(ACCOUNTS_YAML), "/etc/shadow"]
    result = approved_run(domain, ada, read_state_dir, {"paths": {"files": files}})
    assert result["ran"] and result["uid"] == 65534
    assert all(value.startswith("refused") for value in result["found"].values()), result
    assert "etc" not in result["visible_roots"] and "root" in result["visible_roots"]


def test_environment_is_empty_and_proc_is_the_sandboxes_own(sandboxed):
    domain, ada, _ = sandboxed
    result = approved_run(domain, ada, read_environment)
    assert result["ran"] and set(result["environ"]) <= {"PWD", "LC_CTYPE"}
    # pid 1 is the sandbox's own bwrap (its command line names the binds), not the server
    assert result["proc_1"].split("\0")[0].endswith("bwrap")
    assert "domain_setup.server" not in result["proc_1"]


def test_writing_outside_the_sandbox_fails(sandboxed):
    domain, ada, _ = sandboxed
    target = domain.state.root / f"planted-{uuid.uuid4().hex}"
    result = approved_run(domain, ada, write_outside, {"paths": {"files": [str(target)]}})
    assert result["ran"] and result["written"][str(target)].startswith("refused")
    assert not target.exists()


class _Shell:
    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        import os
        return (os.system, (f"touch {self.path}",))


def test_a_malicious_pickle_runs_no_command(sandboxed):
    domain, ada, _ = sandboxed
    marker = domain.state.root / f"pickle-{uuid.uuid4().hex}"
    payload = base64.b64encode(pickle.dumps(_Shell(str(marker)))).decode()
    result = approved_run(domain, ada, unpickle_payload, {"payload": {"b64": payload}})
    assert result["ran"] and result["value"] != "0"  # os.system ran, and failed
    assert not marker.exists()


def test_no_process_can_be_spawned(sandboxed):
    domain, ada, _ = sandboxed
    outcomes = approved_run(domain, ada, spawn_process)["outcomes"]
    assert str(outcomes["subprocess"]).startswith("refused")
    assert str(outcomes["fork"]).startswith("refused") and outcomes["system"] != 0


def test_no_byte_reaches_a_loopback_listener(sandboxed):
    domain, ada, _ = sandboxed
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.5)
    received: list = []

    def accept() -> None:
        for _ in range(60):
            try:
                conn, _ = listener.accept()
                received.append(conn.recv(100))
                conn.close()
            except (socket.timeout, OSError):
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        result = approved_run(domain, ada, network_egress,
                              {"target": {"port": listener.getsockname()[1]}})
    finally:
        listener.close()
    assert result["ran"] and result["sent"].startswith("refused")
    assert received == []


def test_no_syft_server_or_hospital_code_inside(sandboxed):
    domain, ada, _ = sandboxed
    result = approved_run(domain, ada, look_for_syft)
    assert result["ran"] and result["loaded"] == [] and result["domain_setup"] == "not importable"


def test_a_global_hook_planted_by_one_researcher_sees_nothing_of_another(sandboxed):
    domain, ada, grace = sandboxed
    assert approved_run(domain, ada, plant_global_hook)["planted"] is True
    train = split_assets(grace, "xray", "train")
    plan = TrainingPlan(epochs=1, batch_size=32)
    graces = submit_plan(grace, train_xray_plan, inputs=train,
                         constants={"config": plan.config(), "initial_weights": {}},
                         reason="Grace trains")
    domain.cli("review", "approve", graces.request_id)
    assert len(run_approved(grace, graces)["weights"]) > 0
    after = approved_run(domain, ada, collect_from_hook)
    assert after == {"ran": True, "collected": 0, "hooks": 0}


def test_an_infinite_loop_and_a_memory_bomb_are_killed_and_training_still_fits(sandboxed):
    domain, ada, _ = sandboxed
    with pytest.raises(DomainError, match=r"exceeded its time limit \(30 s wall clock"):
        approved_run(domain, ada, loop_forever)
    with pytest.raises(DomainError, match="memory"):
        approved_run(domain, ada, allocate_3gb)
    assert domain.cli("status").count("healthy") == 1
    train = split_assets(ada, "xray", "train")
    submission = submit_plan(ada, train_xray_plan, inputs=train,
                             constants={"config": TrainingPlan(epochs=1).config(),
                                        "initial_weights": {}},
                             reason="one epoch after the attacks")
    domain.cli("review", "approve", submission.request_id)
    trained = run_approved(ada, submission)
    assert trained["n_samples"] == 320 and len(trained["history"]["loss"]) == 1


@pytest.mark.parametrize("plan", [return_too_much, return_a_tensor], ids=["oversized", "tensor"])
def test_results_outside_the_contract_are_withheld_and_audited(sandboxed, plan):
    domain, ada, _ = sandboxed
    with pytest.raises(DomainError, match="result withheld"):
        approved_run(domain, ada, plan)
    withheld = [e for e in domain.admin.audit(action="execution")
                if e["outcome"] == "withheld"]
    assert withheld and withheld[-1]["function"].startswith(plan.__name__)
    assert len(withheld[-1]["code_sha256"]) == 64
