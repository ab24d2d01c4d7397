"""Upload X-rays as a syft dataset: private train and held-out test assets, synthetic mocks.

The dataset has four assets: ``train_images``, ``train_labels``, ``test_images`` and
``test_labels``. Their mocks come from the synthetic generator with the same shape,
dtype and class balance; they are never derived from patient pixels. The test split
stays in the domain: researchers evaluate on it through an approved request.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import numpy as np

from common import syft_compat
from common.errors import DataError, DomainError
from datasets.xray import XRaySplit, generate, load_source, make_card
from datasets.xray.card import card_markdown

ASSET_NAMES = ("train_images", "train_labels", "test_images", "test_labels")
MOCK_SEED_OFFSET = 10_007


@dataclass
class UploadReport:
    """What an upload did: dataset name, card, byte count and seconds taken."""

    name: str
    card: dict
    n_bytes: int
    seconds: float

    @property
    def megabytes_per_second(self) -> float:
        return self.n_bytes / 1e6 / max(self.seconds, 1e-9)


def mock_like(split: XRaySplit, seed: int) -> XRaySplit:
    """Synthetic images and labels with the shape, dtype and class balance of `split`."""
    n, _, height, _ = split.images.shape
    fraction = float(split.labels.mean()) if n else 0.0
    images, labels = generate(n, size=height, pneumonia_fraction=fraction, seed=seed)
    return XRaySplit(images=images.astype(split.images.dtype), labels=labels.astype(split.labels.dtype))


def validate_dataset_name(name: str) -> str:
    import re

    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,47}", name or ""):
        raise DataError(f"invalid dataset name {name!r}: use 1-48 of a-z, 0-9, '_' and '-'")
    return name


def parse_partition(text: str | None) -> tuple[int, int] | None:
    """'2/3' -> (1, 3): this hospital holds the 2nd of 3 partitions (1-based on the CLI)."""
    if text is None:
        return None
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise DataError(f"invalid --partition {text!r}: expected I/K, e.g. 2/3") from None
    if not 1 <= index <= count:
        raise DataError(f"invalid --partition {text!r}: need 1 <= I <= K")
    return index - 1, count


def take_partition(split: XRaySplit, partition: tuple[int, int], label_skew: float | None,
                   seed: int) -> XRaySplit:
    """This hospital's share of `split`: IID, or Dirichlet label-skewed with alpha `label_skew`."""
    from datasets.xray.partition import iid
    from datasets.xray.partition import label_skew as skewed

    index, count = partition
    parts = (skewed(split.labels, count, alpha=label_skew, seed=seed) if label_skew
             else iid(split.labels, count, seed=seed))
    chosen = np.sort(parts[index])
    return XRaySplit(images=split.images[chosen], labels=split.labels[chosen])


def build_dataset(name: str, spec: str, *, size: int, n: int, seed: int,
                  partition: tuple[int, int] | None = None, label_skew: float | None = None):
    """Load and validate the source, then build the `sy.Dataset` (nothing is sent yet)."""
    import syft as sy

    data = load_source(spec, size=size, n=n, seed=seed)
    train = data.train
    if data.val is not None:  # the hospital's validation images join training
        train = XRaySplit(images=np.concatenate([train.images, data.val.images]),
                          labels=np.concatenate([train.labels, data.val.labels]))
    if partition is not None:
        train = take_partition(train, partition, label_skew, seed)
        data.test = take_partition(data.test, partition, None, seed)
        data.train, data.val = train, None
    card = make_card(data, name)
    if partition is not None:
        card["partition"] = f"{partition[0] + 1}/{partition[1]}" + (
            f", label skew alpha={label_skew}" if label_skew else ", IID")
    mock_train = mock_like(train, seed + MOCK_SEED_OFFSET)
    mock_test = mock_like(data.test, seed + 2 * MOCK_SEED_OFFSET)
    dataset = sy.Dataset(name=name, summary=card.get("summary", name),
                         description=card_markdown(card))
    pairs = {"train_images": (train.images, mock_train.images),
             "train_labels": (train.labels, mock_train.labels),
             "test_images": (data.test.images, mock_test.images),
             "test_labels": (data.test.labels, mock_test.labels)}
    for asset_name, (private, mock) in pairs.items():
        dataset.add_asset(sy.Asset(name=asset_name, data=private, mock=mock,
                                   description=f"{asset_name} ({private.dtype}, {private.shape})"))
    n_bytes = sum(private.nbytes + mock.nbytes for private, mock in pairs.values())
    return dataset, card, n_bytes


def find_dataset(client, name: str):
    for dataset in client.datasets.get_all():
        if dataset.name == name:
            return dataset
    return None


def upload(session, spec: str, name: str, *, size: int = 64, n: int = 3000, seed: int = 0,
           replace: bool = False, show_progress: bool = True,
           partition: tuple[int, int] | None = None,
           label_skew: float | None = None) -> UploadReport:
    """Upload `spec` as dataset `name`: an existing name is refused before anything is
    loaded, then the source is loaded and validated, then sent."""
    validate_dataset_name(name)
    client = session.client()
    existing = find_dataset(client, name)
    if existing is not None and not replace:
        raise DomainError(f"dataset {name!r} already exists; use --replace to replace it")
    dataset, card, n_bytes = build_dataset(name, spec, size=size, n=n, seed=seed,
                                           partition=partition, label_skew=label_skew)
    started = time.perf_counter()
    if existing is not None:
        client.api.services.dataset.delete(uid=existing.id)
    with syft_compat.muted() if not show_progress else contextlib.nullcontext():
        result = client.upload_dataset(dataset)
    if syft_compat.is_syft_error(result):
        raise DomainError(f"upload refused: {syft_compat.error_text(result)}")
    seconds = time.perf_counter() - started
    session.audit("dataset.upload", target=name, source=spec.split(":", 1)[0],
                  replaced=str(existing is not None), bytes=str(n_bytes))
    return UploadReport(name=name, card=card, n_bytes=n_bytes, seconds=seconds)
