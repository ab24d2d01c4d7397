"""The dataset card a researcher reads before asking for anything.

    card = make_card(data, "xray"); print(card_markdown(card))
"""

from __future__ import annotations

LABELS = {0: "normal", 1: "pneumonia"}


def _counts(split) -> dict:
    if split is None:
        return {}
    positives = int(split.labels.sum())
    return {"total": int(len(split.labels)), "normal": int(len(split.labels) - positives),
            "pneumonia": positives}


def make_card(data, name: str) -> dict:
    """Source, licence, shapes, label meaning and counts; JSON-serialisable."""
    train = data.train
    counts = {split: _counts(getattr(data, split)) for split in ("train", "val", "test")
              if getattr(data, split) is not None}
    total = sum(c["total"] for c in counts.values())
    fraction = sum(c["pneumonia"] for c in counts.values()) / max(total, 1)
    kind = "SYNTHETIC chest X-rays (generated, no patient data)" if data.synthetic else "chest X-rays"
    return {
        "name": name, "source": data.source, "licence": data.licence, "synthetic": data.synthetic,
        "image_shape": list(train.images.shape[1:]), "image_dtype": str(train.images.dtype),
        "label_meaning": {str(k): v for k, v in LABELS.items()}, "counts": counts,
        "pneumonia_fraction": round(fraction, 4),
        "summary": f"{total} {kind} at {train.images.shape[-1]} px, "
                   f"{fraction:.0%} pneumonia; source: {data.source}",
    }


def card_markdown(card: dict) -> str:
    """The card as a short markdown text (the syft dataset description)."""
    lines = [f"# {card['name']}", "", card["summary"], "",
             f"- source: {card['source']}", f"- licence: {card['licence']}",
             f"- images: {card['image_dtype']} {tuple(card['image_shape'])} (channels, height, width)",
             "- labels: int64, " + ", ".join(f"{k} = {v}" for k, v in card["label_meaning"].items())]
    for split, c in card["counts"].items():
        lines.append(f"- {split}: {c['total']} images ({c['normal']} normal, {c['pneumonia']} pneumonia)")
    if "partition" in card:
        lines.append(f"- partition: {card['partition']}")
    lines.append("- mocks: synthetic images of the same shape, dtype and class balance")
    return "\n".join(lines)
