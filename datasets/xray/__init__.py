"""Chest X-ray data: the synthetic generator and loaders for the formats hospitals have."""

from datasets.xray.card import card_markdown, make_card
from datasets.xray.loaders import (
    XRayData,
    XRaySplit,
    load_kermany,
    load_pneumoniamnist,
    load_source,
    load_synthetic,
)
from datasets.xray.synthetic import generate

__all__ = ["XRayData", "XRaySplit", "card_markdown", "generate", "load_kermany",
           "load_pneumoniamnist", "load_source", "load_synthetic", "make_card"]
