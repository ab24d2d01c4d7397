"""DICOM radiographs from a PACS export (`upload dicom:FOLDER`), read without a domain.

Real files written with pydicom from synthetic pixels: 12- and 16-bit, MONOCHROME1 and 2,
a rescale, a window, uncompressed, RLE Lossless and JPEG 2000 Lossless. The live upload
(and the grep of the state directory for the patient's name) is in test_upload.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydicom.uid import RLELossless

from common.errors import DataError
from datasets.xray import generate, load_source, make_card
from datasets.xray.card import card_markdown
from datasets.xray.dicom import LABELS_FILE
from dicom_files import VARIANTS, export, write_radiograph

SIZE = 64  # written at 96 px, loaded at 64


def _written(n: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    return generate(n, size=96, pneumonia_fraction=0.5, seed=seed)


def _resized(images: np.ndarray) -> np.ndarray:
    from datasets.xray.loaders import _resize

    return _resize(images, SIZE).astype(np.float64)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.reshape(-1), b.reshape(-1))[0, 1])


def test_every_variant_reads_back_as_the_written_image(tmp_path):
    images, labels = _written(8)
    export(tmp_path / "pacs", images, labels, split=True)
    data = load_source(f"dicom:{tmp_path / 'pacs'}", size=SIZE)
    # the split column: images 0-2 test, the rest train, in file order
    assert np.array_equal(data.test.labels, labels[:3]) and np.array_equal(
        data.train.labels, labels[3:])
    loaded = np.concatenate([data.test.images, data.train.images])
    assert loaded.shape == (8, 1, SIZE, SIZE) and loaded.dtype == np.uint8
    expected = _resized(images)
    for i in range(8):  # MONOCHROME1 inverted, rescale and window applied, both codecs
        assert _correlation(loaded[i], expected[i]) > 0.99, (i, VARIANTS[i % len(VARIANTS)])
        assert int(loaded[i].max()) - int(loaded[i].min()) >= 200  # scaled to 0..255


def test_a_narrow_window_clips_as_a_radiologist_would_see_it(tmp_path):
    from pydicom import dcmread

    images, labels = _written(4)
    export(tmp_path / "pacs", images, labels, split=True)  # img000 is the first test image
    full = load_source(f"dicom:{tmp_path / 'pacs'}", size=SIZE).test.images[0]
    path = tmp_path / "pacs" / "series0" / "img000.dcm"
    ds = dcmread(path)
    ds.WindowCenter, ds.WindowWidth = 1024, 512  # the darker quarter of 12 bits only
    ds.save_as(path)
    narrow = load_source(f"dicom:{tmp_path / 'pacs'}", size=SIZE).test.images[0]
    saturated = [(image >= 250).mean() for image in (full, narrow)]
    assert saturated[1] > saturated[0] + 0.2, saturated  # all above the window is white
    dark = full < np.percentile(full, 10)
    assert narrow[dark].mean() < 100  # and the darkest tenth stays dark


def test_labels_by_sop_instance_uid_and_a_seeded_split(tmp_path):
    images, labels = _written(10)
    export(tmp_path / "pacs", images, labels, by_uid=True)
    first = load_source(f"dicom:{tmp_path / 'pacs'}", size=SIZE, seed=3)
    again = load_source(f"dicom:{tmp_path / 'pacs'}", size=SIZE, seed=3)
    assert (len(first.train), len(first.test)) == (8, 2)
    assert np.array_equal(first.test.images, again.test.images)
    assert sorted(np.concatenate([first.train.labels, first.test.labels])) == sorted(labels)


def test_the_card_lists_what_was_kept_and_nothing_that_names_the_patient(tmp_path):
    images, labels = _written(8)
    identities = export(tmp_path / "pacs", images, labels)
    data = load_source(f"dicom:{tmp_path / 'pacs'}", size=SIZE)
    card = make_card(data, "xray-dicom")
    acquisition = card["acquisition"]
    assert acquisition["modality"] == {"DX": 6, "CR": 2}
    assert acquisition["photometric"] == {"MONOCHROME2": 4, "MONOCHROME1": 4}
    assert acquisition["bits_stored"] == {"12": 6, "16": 2}
    assert acquisition["view_position"] == {"PA": 6, "AP": 2}
    assert set(acquisition["transfer_syntax"]) == {
        "Explicit VR Little Endian", "RLE Lossless",
        "JPEG 2000 Image Compression (Lossless Only)"}
    assert acquisition["pixel_spacing_mm"] == [0.139, 0.139]
    text = json.dumps(card) + card_markdown(card) + data.source
    assert "burned-in text" in card_markdown(card)
    for ids in identities:
        for value in ids.values():
            assert value not in text
    assert "pacs" not in data.source  # not even the export's folder name


def test_header_values_outside_the_allowlists_are_counted_as_other(tmp_path):
    from pydicom import dcmread

    images, labels = _written(2)
    export(tmp_path / "pacs", images, labels)
    path = tmp_path / "pacs" / "series0" / "img000.dcm"
    ds = dcmread(path)
    ds.ViewPosition = "ZEBEDEE"  # a free-text value where a defined term belongs
    ds.save_as(path)
    card = make_card(load_source(f"dicom:{tmp_path / 'pacs'}", size=SIZE), "x")
    assert card["acquisition"]["view_position"] == {"PA": 1, "other": 1}
    assert "ZEBEDEE" not in json.dumps(card)


def _bad_export(folder):
    """An export with one good radiograph and one of each kind of bad file."""
    from pydicom import dcmread
    from pydicom.uid import UID

    images, labels = _written(6)
    export(folder, images, labels)
    (folder / "series0" / "img000.dcm").write_text("Patient: Quillfeather\n")  # not DICOM
    write_radiograph(folder / "series0" / "img001.dcm", images[1][0], pixels=False)
    write_radiograph(folder / "series0" / "img002.dcm", images[2][0], modality="CT")
    path = folder / "series0" / "img003.dcm"
    write_radiograph(path, images[3][0], syntax=RLELossless)
    ds = dcmread(path)  # an encapsulated syntax no decoder here knows (MPEG2)
    ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.4.100")
    ds.save_as(path)


def test_a_header_claiming_a_huge_image_is_refused_before_decoding(tmp_path):
    from pydicom import dcmread

    images, labels = _written(2)
    export(tmp_path / "pacs", images, labels)
    path = tmp_path / "pacs" / "series0" / "img000.dcm"
    ds = dcmread(path)
    ds.Rows = ds.Columns = 60000  # 3.6 billion pixels: 29 GB as float64
    ds.save_as(path)
    with pytest.raises(DataError, match="img000.dcm: 60000 x 60000 px is not a radiograph"):
        load_source(f"dicom:{tmp_path / 'pacs'}", size=SIZE)


def test_bad_files_are_each_named_with_a_reason(tmp_path):
    _bad_export(tmp_path / "pacs")
    with pytest.raises(DataError) as refused:
        load_source(f"dicom:{tmp_path / 'pacs'}", size=SIZE)
    message = str(refused.value)
    assert "\n" not in message and message.startswith("4 file(s) cannot be used")
    assert "series0/img000.dcm: not a DICOM file" in message
    assert "series0/img001.dcm: no pixel data" in message
    assert "series0/img002.dcm: modality CT, not a chest radiograph" in message
    assert "series0/img003.dcm: transfer syntax MPEG2" in message
    assert "cannot be decoded here" in message
    assert "Quillfeather" not in message


@pytest.mark.parametrize("labels_csv, expected", [
    (None, "labels.csv: missing"),
    ("name,label\n", "needs a header row with file (or sop_instance_uid) and label"),
    ("file,label\nseries0/img000.dcm,maybe\n", "line 2: label 'maybe' is not 0, 1"),
    ("file,label\nseries0/nothing.dcm,1\n", "line 2: file 'series0/nothing.dcm' names no"),
    ("file,label\nseries0/img000.dcm,1\nseries0/img000.dcm,0\n", "a second label"),
    ("file,label\nseries0/img000.dcm,1\n", "series0/img001.dcm: no label in labels.csv"),
    ("file,label,split\nseries0/img000.dcm,1,val\nseries0/img001.dcm,0,test\n",
     "split 'val' is not train or test"),
    ("file,label,split\nseries0/img000.dcm,1,test\nseries0/img001.dcm,0,test\n",
     "0 training and 2 test image(s)"),
])
def test_a_bad_labels_file_is_refused_in_one_line(tmp_path, labels_csv, expected):
    images, labels = _written(2)
    export(tmp_path / "pacs", images, labels)
    if labels_csv is None:
        (tmp_path / "pacs" / LABELS_FILE).unlink()
    else:
        (tmp_path / "pacs" / LABELS_FILE).write_text(labels_csv)
    with pytest.raises(DataError, match="") as refused:
        load_source(f"dicom:{tmp_path / 'pacs'}", size=SIZE)
    assert expected in str(refused.value) and "\n" not in str(refused.value)


def test_an_empty_or_missing_folder_is_refused(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        load_source(f"dicom:{tmp_path / 'nothing'}", size=SIZE)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no DICOM files"):
        load_source(f"dicom:{tmp_path / 'empty'}", size=SIZE)
