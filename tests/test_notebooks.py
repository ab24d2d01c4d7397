"""Every notebook in notebooks/ runs top to bottom, against live domains started here.

Each notebook is executed with nbclient in a fresh kernel running this interpreter
(a kernelspec written to a temporary folder, so neither a user's kernels nor
`make install`'s `pneumosyft` kernel matter). The kernel finds its connection
files in environment variables, as a researcher's JupyterLab would. An
`Approver` thread plays the hospital admins: it approves compliant requests and
denies violating ones through the same `Reviewer` as `python -m domain_setup review`.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import nbformat
import numpy as np
import pytest

from conftest import PROJECT_ROOT, RESEARCHER

NOTEBOOKS = PROJECT_ROOT / "notebooks"
KERNEL_NAME = "pneumosyft-test"
CELL_TIMEOUT_SECONDS = 600
# Set to a folder to keep the executed notebooks (with outputs) there, e.g. as CI artifacts.
EXECUTED_DIR_ENV = "PNEUMOSYFT_EXECUTED_NOTEBOOKS"

pytestmark = pytest.mark.domain


# -- running a notebook -----------------------------------------------------------------
@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory) -> Path:
    """A kernelspec folder whose one kernel is this interpreter."""
    root = tmp_path_factory.mktemp("kernels")
    spec = root / KERNEL_NAME
    spec.mkdir()
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "PneumoSyft (test)", "language": "python"}))
    return root


def run_notebook(name: str, kernel_dir: Path) -> nbformat.NotebookNode:
    """Execute notebooks/NAME top to bottom in notebooks/; CellExecutionError on any error."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    manager = KernelManager(kernel_name=KERNEL_NAME,
                            kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernel_dir)]))
    client = NotebookClient(notebook, km=manager, timeout=CELL_TIMEOUT_SECONDS,
                            startup_timeout=120, kernel_name=KERNEL_NAME,
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    started = time.perf_counter()
    try:
        client.execute()
    finally:
        print(f"\n{name}: {time.perf_counter() - started:.1f} s")
        if manager.has_kernel:  # nbclient shuts down only kernels of managers it created
            manager.shutdown_kernel(now=True)
        if os.environ.get(EXECUTED_DIR_ENV):
            folder = Path(os.environ[EXECUTED_DIR_ENV])
            folder.mkdir(parents=True, exist_ok=True)
            nbformat.write(notebook, folder / name)
    return notebook


def outputs_text(notebook: nbformat.NotebookNode) -> str:
    """All stream and plain-text outputs of an executed notebook."""
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            parts.append(output.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def count_images(notebook: nbformat.NotebookNode) -> int:
    return sum("image/png" in output.get("data", {})
               for cell in notebook.cells for output in cell.get("outputs", []))


# -- the admins ---------------------------------------------------------------------------
class Approver:
    """Plays the admins of `domains`: `review auto --approve-compliant`, every second."""

    def __init__(self, *domains, poll_seconds: float = 1.0):
        from domain_setup.admin import AdminClient

        self.reviewers = [AdminClient(d.state).reviewer for d in domains]
        self.poll_seconds = poll_seconds
        self.decisions: list[tuple[str, str, str]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="approver", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for reviewer in self.reviewers:
                try:
                    for summary, outcome in reviewer.auto(approve_compliant=True):
                        self.decisions.append((summary.function, outcome,
                                               "; ".join(summary.verdict_reasons)))
                except Exception as exc:  # a request decided meanwhile: try again next poll
                    self.errors.append(f"{type(exc).__name__}: {exc}")
            self._stop.wait(self.poll_seconds)

    def __enter__(self) -> "Approver":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def report(self) -> str:
        denied = [d for d in self.decisions if d[1] == "denied"]
        return f"approver denied {denied}; errors {self.errors[-3:]}"


# -- the notebooks --------------------------------------------------------------------------
def test_notebooks_are_committed_without_outputs():
    names = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    assert names == ["00_hospital_admin.ipynb", "01_connect_and_explore.ipynb",
                     "02_training_plan.ipynb", "03_secret_shared_weights.ipynb",
                     "04_secure_federated_averaging.ipynb", "05_differential_privacy.ipynb",
                     "06_private_inference.ipynb"]
    for name in names:
        notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(notebook)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, name
        source = "\n".join(cell.source for cell in notebook.cells)
        assert "password=" not in source and "eyJ" not in source, f"{name} holds a secret"


def test_00_hospital_admin(kernel_dir, tmp_path, monkeypatch):
    from domain_setup.admin import lifecycle
    from demos.local_domain import free_port
    from domain_setup.state import StateDir

    state = StateDir(tmp_path / "state")
    monkeypatch.setenv("PNEUMOSYFT_STATE_DIR", str(state.root))
    monkeypatch.setenv("PNEUMOSYFT_PORT", str(free_port()))
    try:
        notebook = run_notebook("00_hospital_admin.ipynb", kernel_dir)
    finally:
        left_running = lifecycle.stop(state)
    assert not left_running, "the notebook must stop its domain"
    text = outputs_text(notebook)
    assert "('approved', '')" in text and "returns patient images" in text
    assert (state.root / "ada.json").stat().st_mode & 0o077 == 0


def test_01_connect_and_explore(kernel_dir, ada_connection, monkeypatch):
    monkeypatch.setenv("PNEUMOSYFT_CONNECTION", str(ada_connection))
    notebook = run_notebook("01_connect_and_explore.ipynb", kernel_dir)
    assert count_images(notebook) == 2  # the mock grid and the class balance
    assert "train_images.data -> None" in outputs_text(notebook)


def run_with_admin(name: str, kernel_dir: Path, *domains) -> tuple:
    """Run notebook NAME while an `Approver` plays the admins of `domains`; returns the
    executed notebook and the functions approved (the approver's report on failure)."""
    with Approver(*domains) as approver:
        try:
            notebook = run_notebook(name, kernel_dir)
        except Exception:
            print(approver.report())
            raise
    return notebook, [f for f, outcome, _ in approver.decisions if outcome == "approved"], \
        approver


def test_02_training_plan(kernel_dir, hospital, ada_connection, monkeypatch):
    monkeypatch.setenv("PNEUMOSYFT_CONNECTION", str(ada_connection))
    notebook, approved, approver = run_with_admin("02_training_plan.ipynb", kernel_dir, hospital)
    assert any(f.startswith("train_xray_plan") for f in approved), approver.report()
    assert any(f.startswith("evaluate_xray_plan") for f in approved), approver.report()
    assert count_images(notebook) == 4  # mock curves, domain curves, ROC, confusion matrix


def test_05_differential_privacy(kernel_dir, hospital, ada_connection, monkeypatch):
    monkeypatch.setenv("PNEUMOSYFT_CONNECTION", str(ada_connection))
    notebook, approved, approver = run_with_admin("05_differential_privacy.ipynb", kernel_dir,
                                                  hospital)
    assert any(f.startswith("train_private_xray_plan") for f in approved), approver.report()
    assert any(f.startswith("evaluate_private_xray_plan") for f in approved), approver.report()
    assert count_images(notebook) == 3  # trade-off, noisy ROC, budget (no DP loss curves)
    text = outputs_text(notebook)
    assert "['n_samples', 'privacy', 'weights']" in text  # what a DP plan releases
    assert "'epsilon': 2.0" in text and "'epsilon': 1.0" in text and "releases" in text


def test_03_secret_shared_weights(kernel_dir):
    notebook = run_notebook("03_secret_shared_weights.ipynb", kernel_dir)
    assert count_images(notebook) == 1
    assert "refused:" in outputs_text(notebook)


def test_04_secure_federated_averaging(kernel_dir, federation_domains, tmp_path, monkeypatch):
    federation = federation_domains  # the session's three hospitals (conftest)
    for i, domain in enumerate(federation, start=1):
        path = domain.researcher_file(RESEARCHER, tmp_path / f"ada-{i}.json")
        monkeypatch.setenv(f"PNEUMOSYFT_CONNECTION_{i}", str(path))
    notebook, approved, approver = run_with_admin("04_secure_federated_averaging.ipynb",
                                                  kernel_dir, *federation)
    # per round: 3 plain trainings; 3 secure trainings (the domains aggregate the round they
    # trained in without a request); then 3 evaluations
    assert len(approved) == 2 * 3 + 2 * 3 + 3, approver.report()
    assert count_images(notebook) == 2  # class balance, accuracy per round


def test_06_private_inference(kernel_dir, federation_domains, tmp_path, monkeypatch):
    for i, domain in enumerate(federation_domains, start=1):
        path = domain.researcher_file(RESEARCHER, tmp_path / f"ada-{i}.json")
        monkeypatch.setenv(f"PNEUMOSYFT_CONNECTION_{i}", str(path))
    notebook, approved, approver = run_with_admin("06_private_inference.ipynb", kernel_dir,
                                                  *federation_domains[:2])
    assert len([f for f in approved if f.startswith("private_inference_plan")]) == 2, \
        approver.report()
    assert count_images(notebook) == 1  # the X-ray with both answers
    assert "20 of 20 labels identical" in outputs_text(notebook)


def test_plots_return_figures():
    """The plotting helpers take plain data and return figures, without pyplot."""
    from matplotlib.figure import Figure

    from scientist import plots

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 1, 28, 28), dtype=np.uint8)
    labels = np.array([0, 1] * 6)
    figures = [
        plots.mock_grid(images, labels, per_class=4),
        plots.class_balance({"train": labels, "test": labels[:4]}),
        plots.training_curves({"loss": [0.7, 0.5], "accuracy": [0.6, 0.8]}),
        plots.roc_curve({"fpr": [1.0, 0.5, 0.0], "tpr": [1.0, 0.9, 0.0]}, auc=0.8),
        plots.confusion_matrix([[5, 2], [1, 9]]),
        plots.share_histogram(rng.integers(0, 2**63, 100, dtype=np.uint64), rng.normal(size=100)),
        plots.accuracy_per_round({"plain": [0.7, 0.8], "secure": [0.7, 0.8]},
                                 reference={"majority class": 0.73}),
    ]
    assert all(isinstance(f, Figure) for f in figures)
    with pytest.raises(ValueError):
        plots.share_histogram(np.zeros(3), np.zeros(3))
