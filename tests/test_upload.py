"""Uploads streamed into syft's blob store, on a live domain of their own.

A dataset larger than syft's blob threshold round-trips: the admin reads back the very
private bytes (uint8), a researcher sees only the mock, and a vetted training plan runs
on the uploaded asset. Refusals (an existing name, a broken upload, a blob route misuse)
leave no dataset and no blob file behind.
"""

from __future__ import annotations

import numpy as np
import pytest
import requests

from conftest import RESEARCHER, start_hospital
from common.connection import auth_headers
from common.errors import DomainError
from datasets.xray import generate, load_source, load_synthetic
from dicom_files import export
from domain_setup.admin import upload as upload_module
from domain_setup.admin.upload import MOCK_SEED_OFFSET, blob_bytes, mock_like

pytestmark = pytest.mark.domain

N, SIZE = 6000, 64  # train images 4800 x 64 x 64 = 19.7 MB, above syft's 16 MB blob default


@pytest.fixture(scope="module")
def domain(tmp_path_factory):
    hospital = start_hospital(tmp_path_factory.mktemp("upload"), "Upload General", upload=False)
    yield hospital
    hospital.stop()


@pytest.fixture(scope="module")
def uploaded(domain):
    """The CLI upload of N synthetic images as 'xray' (what the researcher may use)."""
    result = domain.run("upload", "synthetic", "--name", "xray", "--n", str(N), "--size", str(SIZE))
    assert "uploaded 'xray'" in result.stdout and "MB/s" in result.stdout
    return result


@pytest.fixture(scope="module")
def expected():
    data = load_synthetic(n=N, size=SIZE, seed=0)
    return data, mock_like(data.train, MOCK_SEED_OFFSET)


def _blob_files(domain) -> set[str]:
    return {p.name for p in domain.state.blob_dir.iterdir()}


def _assets(client, name="xray"):
    return next(d for d in client.datasets.get_all() if d.name == name).assets


@pytest.mark.parametrize("array", [
    np.arange(3 * 1 * 200 * 300, dtype=np.uint8).reshape(3, 1, 200, 300),  # > one zstd block
    np.array([0, 1, 1, 0], dtype=np.int64),
    np.zeros((0, 1, 28, 28), dtype=np.uint8),
    np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4).T,             # not contiguous
    np.array(2.5), np.array(["a", "bc"]),                                 # syft's own path
])
def test_blob_bytes_are_what_syft_reads_back(array):
    from syft.serde.deserialize import _deserialize

    blob = blob_bytes(array)
    raw = blob.tobytes()
    assert len(raw) == blob.length
    back = _deserialize(raw, from_bytes=True)
    assert type(back) is np.ndarray and back.dtype == array.dtype
    assert back.shape == array.shape and np.array_equal(back, array)


def test_admin_reads_back_the_private_bytes(domain, uploaded, expected):
    data, mock = expected
    assert "Uploading xray" in uploaded.stderr  # the progress bar
    assets = _assets(domain.admin.syft_client())
    private = np.asarray(assets["train_images"].data)
    assert private.dtype == np.uint8 and private.shape == (4800, 1, SIZE, SIZE)
    assert np.array_equal(private, data.train.images)
    assert np.array_equal(np.asarray(assets["test_images"].data), data.test.images)
    assert np.array_equal(np.asarray(assets["train_labels"].data), data.train.labels)
    assert np.array_equal(np.asarray(assets["train_images"].mock), mock.images)
    assert assets["train_images"].shape == (4800, 1, SIZE, SIZE)


def test_researcher_sees_only_the_mock(domain, uploaded, expected):
    from scientist import connect

    data, mock = expected
    ada = connect(connection_file=domain.researcher_file(RESEARCHER))
    assets = _assets(ada)
    seen = assets["train_images"].mock
    assert isinstance(seen, np.ndarray) and seen.dtype == np.uint8
    assert np.array_equal(seen, mock.images)
    assert not np.array_equal(seen, data.train.images)
    try:
        private = assets["train_images"].data
    except Exception:
        private = None
    assert not isinstance(private, np.ndarray)


def test_vetted_training_plan_runs_on_the_uploaded_asset(domain, uploaded):
    from scientist import TrainingPlan, connect
    from scientist.plans import train_xray_plan
    from scientist.submission import run_approved, split_assets, submit_plan, wait_for_approval

    ada = connect(connection_file=domain.researcher_file(RESEARCHER))
    plan = TrainingPlan(model="small_cnn", epochs=1, batch_size=64)
    submission = submit_plan(ada, train_xray_plan, inputs=split_assets(ada, "xray", "train"),
                             constants={"config": plan.config(), "initial_weights": {}},
                             reason="one epoch on the streamed upload")
    domain.cli("review", "approve", submission.request_id)
    wait_for_approval(ada, submission, timeout=60, progress=False)
    trained = run_approved(ada, submission)
    assert trained["n_samples"] == 4800
    assert all(isinstance(w, np.ndarray) and w.dtype == np.float32
               for w in trained["weights"].values())


def test_existing_name_without_replace_writes_nothing(domain, uploaded, expected):
    before = _blob_files(domain)
    result = domain.run("upload", "synthetic", "--name", "xray", "--n", "300", check=False)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "already exists" in lines[0] and "--replace" in lines[0]
    assert _blob_files(domain) == before
    admin = domain.admin.syft_client()
    assert [d.name for d in admin.datasets.get_all()].count("xray") == 1
    assert np.array_equal(np.asarray(_assets(admin)["train_images"].data), expected[0].train.images)


def test_failed_upload_leaves_no_dataset_and_no_blob(domain, uploaded, monkeypatch):
    before = _blob_files(domain)
    real, calls = upload_module.stream_blob, []

    def breaks_on_the_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise DomainError("the network broke")
        return real(*args, **kwargs)

    monkeypatch.setattr(upload_module, "stream_blob", breaks_on_the_third)
    with pytest.raises(DomainError, match="network broke"):
        domain.admin.upload("synthetic", "broken", n=200, size=28, progress=False)
    assert "broken" not in domain.admin.datasets()
    assert _blob_files(domain) == before


def test_replace_swaps_the_dataset(domain, uploaded):
    domain.cli("upload", "synthetic", "--name", "swap", "--n", "200", "--size", "28")
    domain.cli("upload", "synthetic", "--name", "swap", "--n", "300", "--size", "28", "--replace")
    admin = domain.admin.syft_client()
    assert [d.name for d in admin.datasets.get_all()].count("swap") == 1
    assert np.asarray(_assets(admin, "swap")["train_images"].data).shape == (240, 1, 28, 28)


def test_blob_route_writes_once_for_its_own_uploader(domain, uploaded):
    from syft.types.blob_storage import CreateBlobStorageEntry

    session = domain.admin.session
    client = session.client()
    array = np.arange(1000, dtype=np.uint8)
    blob = blob_bytes(array)
    deposit = client.api.services.blob_storage.allocate(
        CreateBlobStorageEntry.from_obj(array, file_size=blob.length))
    entry = deposit.blob_storage_entry_id.no_dash
    url = f"{session.url}/pneumosyft/blob/{entry}"
    before = _blob_files(domain)

    short = requests.put(url, data=blob.tobytes()[:-8], headers=auth_headers(session.token))
    assert short.status_code == 400 and "exactly" in short.json()["error"]
    assert _blob_files(domain) == before

    ada_token = domain.admin.issue_token(RESEARCHER)[0]
    refused = requests.put(url, data=blob.tobytes(), headers=auth_headers(ada_token))
    assert refused.status_code == 403
    unknown = requests.put(f"{session.url}/pneumosyft/blob/{'0' * 32}", data=b"x",
                           headers=auth_headers(session.token))
    assert unknown.status_code == 404

    upload_module.stream_blob(session, entry, blob, _NoProgress())
    with pytest.raises(DomainError, match="already written"):
        upload_module.stream_blob(session, entry, blob, _NoProgress())
    assert len(_blob_files(domain) - before) == 1
    read = client.api.services.blob_storage.read(uid=deposit.blob_storage_entry_id).read()
    assert np.array_equal(read, array)
    client.api.services.blob_storage.delete(uid=deposit.blob_storage_entry_id)


class _NoProgress:
    def update(self, n: int) -> None:
        pass


def test_a_dicom_export_uploads_and_nothing_that_names_a_patient_reaches_the_store(
        domain, uploaded, tmp_path):
    images, labels = generate(12, size=96, pneumonia_fraction=0.5, seed=5)
    identities = export(tmp_path / "pacs", images, labels)
    result = domain.run("upload", f"dicom:{tmp_path / 'pacs'}", "--name", "xray-dicom",
                        "--size", "64")
    assert "uploaded 'xray-dicom'" in result.stdout
    expected = load_source(f"dicom:{tmp_path / 'pacs'}", size=64)
    assets = _assets(domain.admin.syft_client(), "xray-dicom")
    assert np.array_equal(np.asarray(assets["train_images"].data), expected.train.images)
    assert np.array_equal(np.asarray(assets["test_labels"].data), expected.test.labels)
    # no identifying header value anywhere in the state directory: database, blobs, logs
    secrets = {value.encode() for ids in identities for value in ids.values()}
    secrets |= {b"Quillfeather", b"Zebedee"}
    files = [p for p in domain.state.root.rglob("*") if p.is_file()]
    assert len(files) > 5
    for path in files:
        content = path.read_bytes()
        assert not [s for s in secrets if s in content], path


def test_a_bad_dicom_export_uploads_nothing(domain, uploaded, tmp_path):
    images, labels = generate(4, size=96, seed=6)
    export(tmp_path / "pacs", images, labels)
    (tmp_path / "pacs" / "series0" / "img002.dcm").write_bytes(b"not a radiograph")
    before = _blob_files(domain)
    result = domain.attempt("upload", f"dicom:{tmp_path / 'pacs'}", "--name", "bad-dicom")
    assert result.returncode != 0
    assert "series0/img002.dcm: not a DICOM file" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "bad-dicom" not in domain.admin.datasets() and _blob_files(domain) == before
