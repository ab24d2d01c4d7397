"""Silence syft's chatter around a researcher's calls, safely across threads.

syft prints hints meant for its own tutorials ("please create a project ...")
and IPython-displays success banners. ``syft_quiet()`` mutes both while any
thread is inside it: the first thread in swaps ``sys.stdout`` and syft's
``display`` for sinks, the last one out puts them back. A plain
``contextlib.redirect_stdout`` is not enough when several hospitals are called
from threads at once: overlapping redirects restore each other's sinks and can
leave stdout muted for good.

    with syft_quiet():
        client.code.request_code_execution(function, reason="...")
"""

from __future__ import annotations

import contextlib
import io
import sys
import threading
from typing import Iterator

_lock = threading.Lock()
_depth = 0
_saved: tuple = ()


def _muted_display(*objects: object, **kwargs: object) -> None:
    return None


@contextlib.contextmanager
def syft_quiet() -> Iterator[None]:
    """Mute stdout and syft's IPython displays until every thread has left."""
    global _depth, _saved
    from syft.service.code import user_code

    with _lock:
        if _depth == 0:
            _saved = (sys.stdout, user_code.display)
            sys.stdout, user_code.display = io.StringIO(), _muted_display
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                sys.stdout, user_code.display = _saved
                _saved = ()
