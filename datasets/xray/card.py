"""The dataset card a researcher reads before asking for anything.

    card = make_card(load_synthetic(n=500, size=28), "xray")
    print(card["summary"])         # "SYNTHETIC chest X-rays (generated, no patient data): ..."
    print(card_markdown(card))     # the syft dataset description
"""

from __future__ import annotations

from datasets.xray.loaders import LABEL_NAMES, XRayData, XRaySplit


def _split_counts(split: XRaySplit) -> dict:
    total = int(len(split.labels))
    pneumonia = int((split.labels == 1).sum())
    return {"images": total, "normal": total - pneumonia, "pneumonia": pneumonia,
            "pneumonia_fraction": round(pneumonia / total, 4) if total else 0.0}


def make_card(data: XRayData, name: str) -> dict:
    """Name, summary, source, licence, synthetic flag, image shape and dtype, label
    meaning, and per-split and overall class counts; JSON-serialisable (label keys are
    the strings "0" and "1")."""
    splits = {split_name: _split_counts(split) for split_name, split in data.splits().items()}
    total = sum(counts["images"] for counts in splits.values())
    pneumonia = sum(counts["pneumonia"] for counts in splits.values())
    fraction = round(pneumonia / total, 4) if total else 0.0
    shape = [int(d) for d in data.train.images.shape[1:]]
    kind = ("SYNTHETIC chest X-rays (generated, no patient data)" if data.synthetic
            else f"chest X-rays from {data.source}")
    sizes = " / ".join(f"{counts['images']} {split_name}" for split_name, counts in splits.items())
    return {
        "name": name,
        "summary": f"{kind}: {sizes}, {shape[-2]}x{shape[-1]} px, {fraction:.0%} pneumonia",
        "source": data.source,
        "licence": data.licence,
        "synthetic": bool(data.synthetic),
        "image": {"shape": shape, "dtype": str(data.train.images.dtype)},
        "labels": {str(value): meaning for value, meaning in LABEL_NAMES.items()},
        "splits": splits,
        "n_images": total,
        "pneumonia_fraction": fraction,
        **({"acquisition": data.acquisition} if data.acquisition else {}),
    }


def card_markdown(card: dict) -> str:
    """The card as a short markdown text (used as the syft dataset description)."""
    image = card["image"]
    lines = [f"### {card['name']}", "", card["summary"], ""]
    if card["synthetic"]:
        lines += ["> **SYNTHETIC**: generated images, no patient data; results on them say",
                  "> nothing about real patients.", ""]
    lines += [
        f"- **source:** {card['source']}",
        f"- **licence:** {card['licence']}",
        f"- **images:** {image['dtype']}, shape {' x '.join(map(str, image['shape']))} "
        "(channels x height x width)",
        "- **labels:** int64, " + ", ".join(f"{k} = {v}" for k, v in card["labels"].items()),
    ]
    if "partition" in card:  # set by the uploader when a hospital holds one partition
        lines.append(f"- **partition:** {card['partition']}")
    if "acquisition" in card:
        lines += _acquisition_lines(card["acquisition"])
    lines += ["", "| split | images | normal | pneumonia | pneumonia % |",
              "|---|---:|---:|---:|---:|"]
    for split_name, counts in card["splits"].items():
        lines.append(f"| {split_name} | {counts['images']} | {counts['normal']} | "
                     f"{counts['pneumonia']} | {counts['pneumonia_fraction']:.1%} |")
    lines += ["", "Mocks are synthetic images with the same shape, dtype and class balance."]
    return "\n".join(lines)


def _acquisition_lines(acquisition: dict) -> list[str]:
    """The DICOM header values kept (counts of allowlisted values) and the caveat."""
    def counts(key: str) -> str:
        return ", ".join(f"{value} {count}" for value, count in acquisition[key].items())

    spacing = acquisition.get("pixel_spacing_mm")
    return [
        f"- **acquisition (DICOM):** modality {counts('modality')}; view position "
        f"{counts('view_position')}; bits stored {counts('bits_stored')}; "
        f"{counts('photometric')}; pixel spacing "
        + (f"{spacing[0]:g} to {spacing[1]:g} mm" if spacing else "not stated")
        + f"; transfer syntax {counts('transfer_syntax')}",
        "- **de-identified:** no header field that names a patient was kept (names, IDs, "
        "birth dates, accession numbers, dates, institution, UIDs); the pixels may still "
        f"carry burned-in text (burned-in annotation flag: {counts('burned_in_annotation')})",
    ]
