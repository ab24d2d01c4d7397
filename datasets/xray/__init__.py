"""Chest X-ray data: the synthetic generator, loaders for the formats hospitals have,
partitions among hospitals, dataset cards and the pixel baseline.

    from datasets.xray import load_source, make_card
    data = load_source("synthetic", size=64, n=3000)
"""

from datasets.xray.card import card_markdown, make_card
from datasets.xray.loaders import (
    XRayData,
    XRaySplit,
    load_kermany,
    load_pneumoniamnist,
    load_synthetic,
)
from datasets.xray.sources import load_source, register_source
from datasets.xray.synthetic import generate

__all__ = ["XRayData", "XRaySplit", "card_markdown", "generate", "load_kermany",
           "load_pneumoniamnist", "load_source", "load_synthetic", "make_card",
           "register_source"]
