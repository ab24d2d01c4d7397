"""Data sources by scheme: what `python -m domain_setup upload SOURCE` accepts.

A source spec is ``scheme`` or ``scheme:PATH``. Each scheme is registered with a
loader that returns `XRayData` at the asked size; a new format is one new file with
a loader and its ``@register_source`` (imported below, or by whoever needs it).

    load_source("synthetic", size=28, n=400)
    load_source("folder:chest_xray", size=64)

    @register_source("nifti")
    def load_nifti(path: str, *, size: int, n: int, seed: int) -> XRayData: ...
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from common.errors import DataError
from datasets.xray.loaders import XRayData, load_kermany, load_pneumoniamnist, load_synthetic

Loader = Callable[..., XRayData]  # (path or None, *, size, n, seed) -> XRayData


@dataclass(frozen=True)
class Source:
    """A registered scheme: its loader and whether it takes ``:PATH``."""

    scheme: str
    loader: Loader
    needs_path: bool

    @property
    def usage(self) -> str:
        return f"{self.scheme}:PATH" if self.needs_path else self.scheme


_SOURCES: dict[str, Source] = {}


def register_source(scheme: str, *, needs_path: bool = True) -> Callable[[Loader], Loader]:
    """Decorator: register `loader(path, *, size, n, seed)` for ``scheme[:PATH]`` specs."""
    if not scheme.isidentifier():
        raise ValueError(f"source scheme {scheme!r} must be an identifier")

    def register(loader: Loader) -> Loader:
        if scheme in _SOURCES and _SOURCES[scheme].loader is not loader:
            raise ValueError(f"a source called {scheme!r} is already registered")
        _SOURCES[scheme] = Source(scheme, loader, needs_path)
        return loader
    return register


def source_usages() -> tuple[str, ...]:
    """How each registered scheme is written: ``synthetic``, ``folder:PATH``, ..."""
    return tuple(source.usage for source in _SOURCES.values())


def load_source(spec: str, size: int = 64, n: int = 3000, seed: int = 0) -> XRayData:
    """Load from a source spec; images come out at size x size (`n`, `seed`: generators)."""
    scheme, _, target = str(spec).partition(":")
    source = _SOURCES.get(scheme)
    if source is None:
        raise DataError(f"unknown data source {spec!r}; use one of {', '.join(source_usages())}")
    if source.needs_path and not target:
        raise DataError(f"source {spec!r} needs a path: {scheme}:PATH")
    if not source.needs_path and target:
        raise DataError(f"source {scheme!r} takes no path; use one of "
                        f"{', '.join(source_usages())}")
    return source.loader(target or None, size=size, n=n, seed=seed)


@register_source("synthetic", needs_path=False)
def _synthetic(path: None, *, size: int, n: int, seed: int) -> XRayData:
    return load_synthetic(n=n, size=size, seed=seed)


@register_source("pneumoniamnist")
def _pneumoniamnist(path: str, *, size: int, n: int, seed: int) -> XRayData:
    return load_pneumoniamnist(path, size=size)


@register_source("folder")
def _kermany_folder(path: str, *, size: int, n: int, seed: int) -> XRayData:
    return load_kermany(path, size=size)


@register_source("dicom")
def _dicom_folder(path: str, *, size: int, n: int, seed: int) -> XRayData:
    from datasets.xray.dicom import load_dicom_folder

    return load_dicom_folder(path, size=size, seed=seed)
