"""Synthetic chest X-rays: a deterministic, patient-free stand-in for real data.

Each image is a frontal (PA) chest radiograph drawn from a small anatomical model:
body outline, two lung fields, posterior ribs, clavicles, spine and mediastinum,
heart shadow, diaphragm domes and vessel markings, with random patient position,
size, rotation, inspiration depth, soft-tissue haze, exposure and noise. Pneumonia
adds one to three consolidations: patchy, blurred opacities inside a lung field of
varying size, place and density, some of them faint.

The task is fair: every image is auto-exposed to a random mean brightness and
normal images carry broad haze too, so neither global nor regional brightness
separates the classes; a detector has to find the local, patchy opacities.

    images, labels = generate(1000, size=64, seed=1)   # uint8 (1000,1,64,64), int64 (1000,)
"""

from __future__ import annotations

import numpy as np

from common.errors import DataError

MIN_SIZE, MAX_SIZE = 8, 1024  # px: any square size in between renders
_CHUNK = 256          # images rendered at once (bounds memory at 128 px)
_MAX_PATCHES = 3      # consolidations per pneumonia image


def generate(n: int, size: int = 64, pneumonia_fraction: float = 0.73,
             seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`n` synthetic chest X-rays: uint8 images (n,1,size,size), int64 labels (n,).

    Label 0 is normal and 1 pneumonia; exactly ``round(n * pneumonia_fraction)``
    images are positive, in shuffled order. Same arguments, same output.

        images, labels = generate(8, size=28, pneumonia_fraction=0.5, seed=3)
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise DataError(f"n must be a non-negative integer, got {n!r}")
    if (isinstance(size, bool) or not isinstance(size, (int, np.integer))
            or not MIN_SIZE <= size <= MAX_SIZE):
        raise DataError(f"size must be an integer from {MIN_SIZE} to {MAX_SIZE} px, got {size!r}")
    if not 0.0 <= float(pneumonia_fraction) <= 1.0:
        raise DataError(f"pneumonia_fraction must be in [0, 1], got {pneumonia_fraction!r}")
    rng = np.random.Generator(np.random.PCG64(seed))
    n = int(n)
    labels = np.zeros(n, dtype=np.int64)
    labels[: round(n * float(pneumonia_fraction))] = 1
    labels = rng.permutation(labels)
    images = np.empty((n, 1, size, size), dtype=np.uint8)
    for start in range(0, n, _CHUNK):
        chunk = labels[start:start + _CHUNK]
        images[start:start + len(chunk), 0] = _to_uint8(_render(rng, chunk, size))
    return images, labels


# --------------------------------------------------------------------------- helpers

def _u(rng: np.random.Generator, low: float, high: float, n: int) -> np.ndarray:
    """Per-image uniform parameters shaped (n, 1, 1) to broadcast over pixels."""
    return rng.uniform(low, high, n)[:, None, None].astype(np.float32)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    """3t^2 - 2t^3 with t = x clipped to [0, 1]: a soft step from 0 to 1."""
    t = np.minimum(np.maximum(x, np.float32(0.0)), np.float32(1.0))
    out = t * t
    t *= np.float32(-2.0)
    t += np.float32(3.0)
    out *= t
    return out


def _gauss_matrix(size: int, centres: np.ndarray, width: float) -> np.ndarray:
    """Row-normalised Gaussian weights from `size` pixels to `centres` (both in [-1, 1])."""
    pixels = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    weights = np.exp(-0.5 * ((pixels[:, None] - centres[None, :]) / width) ** 2)
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, n: int, size: int, cells: int) -> np.ndarray:
    """Smooth random fields (n, size, size), unit-ish variance, feature size ~ 2/cells."""
    grid = np.linspace(-1.2, 1.2, cells, dtype=np.float32)
    up = _gauss_matrix(size, grid, 2.4 / (cells - 1) * 0.6)
    coarse = rng.standard_normal((n, cells, cells), dtype=np.float32)
    field = up @ coarse @ up.T
    return field / (field.std(axis=(1, 2), keepdims=True) + 1e-6)


def _blur(images: np.ndarray, sigma_px: float) -> np.ndarray:
    """Separable Gaussian blur of (n, H, W) images by matrix products."""
    size = images.shape[-1]
    pixels = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    kernel = _gauss_matrix(size, pixels, sigma_px * 2.0 / size)
    return kernel @ images @ kernel.T


def _to_uint8(images: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(images * 255.0), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- anatomy

def _render(rng: np.random.Generator, labels: np.ndarray, size: int) -> np.ndarray:
    """Float images in [0, 1] of shape (len(labels), size, size)."""
    n = len(labels)
    axis = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    gx, gy = axis[None, None, :], axis[:, None][None]

    # patient pose: shift, scale, small rotation -> body coordinates (x, y), y downwards
    scale = _u(rng, 0.85, 1.1, n)
    shift_x, shift_y = _u(rng, -0.08, 0.08, n), _u(rng, -0.08, 0.1, n)
    angle = _u(rng, -0.08, 0.08, n)
    cos, sin = np.cos(angle), np.sin(angle)
    dx, dy = (gx - shift_x) / scale, (gy - shift_y) / scale
    x, y = cos * dx + sin * dy, -sin * dx + cos * dy
    ax = np.abs(x)

    # body outline: torso flaring downwards from sloping shoulders, and the neck
    width = _u(rng, 0.86, 1.0, n) + 0.08 * y
    shoulder = -0.92 + 0.4 * np.clip(ax - 0.2, 0, None) ** 1.5
    torso = _smoothstep((y - shoulder) * 6.0) * _smoothstep((width - ax) * 8.0)
    neck = _smoothstep((0.24 - ax) * 10.0)
    body = np.maximum(torso, neck)

    # lung fields: egg-shaped (wider at the base), cut below by the diaphragm domes
    breath = _u(rng, 0.9, 1.08, n)                      # depth of inspiration
    lung_w, lung_h = 0.33 * _u(rng, 0.92, 1.08, n), 0.7 * breath
    lung_cy = -0.08 + 0.08 * (1.0 - breath)
    side_x = 0.44 * _u(rng, 0.95, 1.05, n)
    ny = (y - lung_cy) / lung_h
    nx = (ax - side_x) / (lung_w * (1.0 + 0.3 * np.clip(ny, -1, 1)))
    ellipse = np.abs(nx) ** 2.4 + np.abs(ny) ** 2.4
    right_higher = np.where(x < 0, np.float32(-0.05), np.float32(0.02))  # image left = right
    dome_top = lung_cy + 0.55 * lung_h + right_higher
    dome = dome_top + 0.6 * ((ax - side_x + 0.05) / 0.33) ** 2
    lungs = _smoothstep((1.0 - ellipse) * 3.5) * _smoothstep((dome - y) * 12.0)

    # heart: a wide ellipse low and to the image right, hiding the medial left lung
    heart_w = 0.3 * _u(rng, 0.85, 1.2, n)
    heart = _smoothstep((1.0 - ((x - 0.13) / heart_w) ** 2 - ((y - 0.24) / 0.27) ** 2) * 2.0)

    # spine with vertebrae, mediastinum, and the air-filled trachea
    vertebrae = 0.75 + 0.25 * np.cos(2 * np.pi * (y / 0.13 + _u(rng, 0, 1, n)))
    spine = np.exp(-0.5 * (x / 0.055) ** 2) * vertebrae
    mediastinum = np.exp(-0.5 * (x / 0.13) ** 2) * _smoothstep((y + 0.7) * 4)
    trachea = np.exp(-0.5 * (x / 0.035) ** 2) * _smoothstep((-0.3 - y) * 6)

    # posterior ribs: bright arcs falling laterally, strongest over the lungs
    rib_period = 0.15 * breath * (1.0 + 0.15 * y)
    rib_phase = (y - 0.45 * np.clip(ax - 0.12, 0, None) ** 2) / rib_period + _u(rng, 0, 1, n)
    ribs = np.clip(np.cos(2 * np.pi * rib_phase), 0.0, 1.0) ** 3
    thorax = _smoothstep((1.15 - ellipse) * 2) * _smoothstep((dome - y + 0.05) * 8)
    ribs = ribs * thorax * _smoothstep((ax - 0.08) * 10)

    # clavicles: oblique bands from the manubrium towards the shoulders
    clav_y = -0.72 + _u(rng, -0.05, 0.05, n) - 0.1 * (ax - 0.15) + 0.3 * (ax - 0.45) ** 2
    clavicles = np.exp(-0.5 * ((y - clav_y) / 0.035) ** 2) * _smoothstep((ax - 0.1) * 10) \
        * _smoothstep((0.8 - ax) * 8)

    # vessel markings and soft-tissue haze (present in every image, normal or not)
    markings = _smooth_noise(rng, n, size, 14) * np.exp(-1.2 * ((ax - 0.2) / 0.5) ** 2)
    haze = np.clip(_smooth_noise(rng, n, size, 4), 0.0, 2.0) * _u(rng, 0.0, 0.2, n)
    lower_haze = _u(rng, 0.0, 0.3, n) * _smoothstep((y + 0.1) * 2.0)   # breasts, habitus

    # air in the lungs darkens the film; consolidation replaces that air
    lung_dark = _u(rng, 0.26, 0.45, n)
    air = lungs * (1.0 - 0.75 * heart)
    filled = _consolidations(rng, labels, size, x, y, side_x, lung_w, lung_cy, lung_h)
    attenuation = (
        0.05 + 0.5 * body
        - lung_dark * air * (1.0 - filled)
        + 0.03 * heart * body
        + 0.1 * mediastinum + 0.07 * spine - 0.12 * trachea
        + _u(rng, 0.07, 0.12, n) * ribs
        + 0.16 * clavicles
        + air * (0.025 * markings + haze + lower_haze)
    )
    image = _blur(attenuation.astype(np.float32), 0.6 * size / 64)
    return _expose(rng, image, size)


def _consolidations(rng, labels, size, x, y, side_x, lung_w, lung_cy, lung_h) -> np.ndarray:
    """Patchy opacities in [0, 1] (the fraction of lung air they replace); 0 for normals."""
    n = len(labels)
    total = np.zeros((n, size, size), dtype=np.float32)
    count = rng.integers(1, _MAX_PATCHES + 1, n)
    for patch in range(_MAX_PATCHES):
        # every image draws its parameters, so the random stream does not depend on labels
        side = rng.choice(np.array([-1.0, 1.0], dtype=np.float32), n)[:, None, None]
        cx = side * (side_x + lung_w * _u(rng, -0.6, 0.7, n))   # anywhere in either lung
        cy = lung_cy + lung_h * _u(rng, -0.6, 0.55, n)
        radius = _u(rng, 0.14, 0.3, n)
        stretch = _u(rng, 0.7, 1.4, n)
        faint = rng.random(n) < 0.2
        density = np.where(faint, rng.uniform(0.35, 0.6, n), rng.uniform(0.65, 1.0, n))
        on = np.flatnonzero((labels == 1) & (count > patch))
        if len(on) == 0:
            continue
        blob = np.exp(-0.5 * (((x[on] - cx[on]) / (radius[on] * stretch[on])) ** 2
                              + ((y[on] - cy[on]) / radius[on]) ** 2))
        outline = _smooth_noise(rng, len(on), size, 12)     # ragged, ill-defined margins
        inside = _smooth_noise(rng, len(on), size, 20)      # patchy fill, air bronchograms
        opacity = _smoothstep((blob + 0.3 * outline - 0.4) * 2.5) * (0.8 + 0.2 * np.tanh(inside))
        total[on] += density[on, None, None].astype(np.float32) * opacity
    return np.minimum(total, 1.0)


def _expose(rng: np.random.Generator, image: np.ndarray, size: int) -> np.ndarray:
    """Film response, auto-exposure to a random mean brightness, and noise."""
    n = len(image)
    gamma = _u(rng, 0.75, 1.35, n)
    image = np.clip(image, 0.0, 1.0) ** gamma
    contrast = _u(rng, 0.8, 1.25, n)
    mean = image.mean(axis=(1, 2), keepdims=True)
    target = _u(rng, 0.32, 0.5, n)
    image = (image - mean) * contrast + target
    noise = _u(rng, 0.01, 0.035, n) * rng.standard_normal(image.shape, dtype=np.float32)
    grain = 0.015 * _smooth_noise(rng, n, size, 24)
    return np.clip(image + noise + grain, 0.0, 1.0)
