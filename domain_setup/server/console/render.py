"""Turning what the console shows into HTML, SVG and PNG, escaped at every step.

* `page(name, **values)`: a Jinja2 template of `templates/` with autoescape on for
  every value (text, attributes, URLs); a template never marks researcher text safe.
* `visible(text)`: characters a reader would not see as they are (bidirectional
  overrides, zero-width and control characters) written out as ⟪U+202E⟫.
* `highlighted(code)`: Python source with line numbers, by Pygments, which escapes
  the source itself, hidden characters written out, long lines wrapped; colours come
  from a stylesheet (`pygments_css`), never inline.
* `epsilon_plot(series)`: an SVG line plot of ε over time, built from numbers only
  (labels are escaped like any other text).
* `thumbnail(image)`: a mock X-ray (a 2-D array in [0, 1]) as a PNG.
"""

from __future__ import annotations

import functools
import io
import time
import unicodedata
from pathlib import Path
from typing import Any

from markupsafe import Markup, escape

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cs", "Cn", "Zl", "Zp"})
LONG_LINE = 120  # characters: a longer line of code is pointed out to the admin
PLOT_COLOURS = ("#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df", "#bf3989")


@functools.lru_cache(maxsize=1)
def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["when"] = when
    env.filters["visible"] = visible
    return env


def page(name: str, **values: Any) -> str:
    """The template `name` rendered with `values` (every value escaped)."""
    return _environment().get_template(name).render(**values)


def when(seconds: Any) -> str:
    """A Unix time as 'YYYY-MM-DD HH:MM:SS' UTC ('' when absent)."""
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(seconds)))
    except (TypeError, ValueError, OverflowError):
        return ""


def hidden_characters(text: str, keep: str = "") -> list[str]:
    """The characters of `text` a reader would not see as they are (controls, format and
    bidirectional overrides, private use, unassigned, line and paragraph separators),
    but those in `keep`: their code points, 'U+202E'."""
    return [f"U+{ord(c):04X}" for c in text
            if c not in keep and unicodedata.category(c) in HIDDEN_CATEGORIES]


def visible(text: Any, keep: str = "") -> str:
    """`text` with every hidden character (`hidden_characters`) written out as ⟪U+202E⟫,
    so that what the admin reads is what the text is: a right-to-left override cannot
    reorder code or a reason on the screen."""
    text = str(text)
    return "".join(f"⟪U+{ord(c):04X}⟫" if c not in keep and
                   unicodedata.category(c) in HIDDEN_CATEGORIES else c for c in text)


def highlighted(code: str) -> Markup:
    """`code` as highlighted HTML with a number on every line, hidden characters written
    out (`visible`) and long lines wrapped, not scrolled out of sight (Pygments escapes)."""
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import PythonLexer

    return Markup(highlight(visible(code, keep="\n\t"), PythonLexer(),
                            HtmlFormatter(linenos="inline", cssclass="code")))


@functools.lru_cache(maxsize=1)
def pygments_css() -> str:
    from pygments.formatters import HtmlFormatter

    return HtmlFormatter(cssclass="code", style="default").get_style_defs(".code")


def epsilon_plot(series: dict[str, list[tuple[float, float]]], *, width: int = 720,
                 height: int = 260, now: float | None = None) -> Markup:
    """SVG of cumulative ε charged over time, one step line per (researcher, dataset)
    label, from a little before the first release to `now`: `series` maps a label to
    [(unix time, cumulative ε), ...] in time order."""
    points = [p for line in series.values() for p in line]
    if not points:
        return Markup('<p class="muted">No privacy releases yet.</p>')
    left, right, top, bottom = 56, 16, 12, 40
    first, t1 = min(p[0] for p in points), max(max(p[0] for p in points), now or time.time())
    t0 = first - max((t1 - first) * 0.05, 1.0)
    e1 = max(max(p[1] for p in points), 1e-9)
    span = max(t1 - t0, 1.0)

    def x(t: float) -> float:
        return left + (t - t0) / span * (width - left - right)

    def y(e: float) -> float:
        return top + (1 - e / e1) * (height - top - bottom)

    parts = [f'<svg class="plot" role="img" viewBox="0 0 {width} {height + 22 * len(series)}" '
             f'width="{width}" xmlns="http://www.w3.org/2000/svg">',
             '<title>ε spent over time</title>',
             f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" '
             f'y2="{height - bottom}" stroke="#888"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#888"/>']
    for k in range(5):
        value = e1 * k / 4
        parts.append(f'<text x="{left - 6}" y="{y(value) + 4:.1f}" text-anchor="end" '
                     f'font-size="11">{value:.2f}</text>')
    parts.append(f'<text x="{left}" y="{height - 20}" font-size="11">'
                 f'{escape(when(t0))}</text>')
    parts.append(f'<text x="{width - right}" y="{height - 20}" font-size="11" '
                 f'text-anchor="end">{escape(when(t1))}</text>')
    for number, (label, line) in enumerate(series.items()):
        colour = PLOT_COLOURS[number % len(PLOT_COLOURS)]
        steps, previous = [(x(t0), y(0.0))], 0.0
        for t, e in line:  # a step plot: ε jumps at each release
            steps += [(x(t), y(previous)), (x(t), y(e))]
            previous = e
        steps.append((x(t1), y(previous)))
        path = " ".join(f"{a:.1f},{b:.1f}" for a, b in steps)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" '
                     f'points="{path}"/>')
        legend_y = height + 22 * number + 4
        parts.append(f'<rect x="{left}" y="{legend_y}" width="12" height="12" '
                     f'fill="{colour}"/>')
        parts.append(f'<text x="{left + 18}" y="{legend_y + 11}" font-size="12">'
                     f'{escape(label)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def thumbnail(image: Any, size: int = 96) -> bytes:
    """A mock image (2-D, values in [0, 1], or a 1x HxW tensor) as PNG bytes."""
    import numpy as np
    from PIL import Image

    array = np.asarray(image, dtype=np.float32).squeeze()
    if array.ndim != 2:
        raise ValueError(f"a mock image must be 2-D, not {array.shape}")
    low, high = float(array.min()), float(array.max())
    scaled = (array - low) / (high - low) if high > low else np.zeros_like(array)
    picture = Image.fromarray((scaled * 255).astype(np.uint8), mode="L")
    picture = picture.resize((size, size), Image.NEAREST)
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return out.getvalue()
