"""Driving the web console in the system's Chromium with Playwright (no browser download).

`Browser` opens one Chromium per test module; `Browser.login` gives a page in a fresh
context (its own cookies) logged in as an account. `Watch` is installed in a page before
any of its scripts: it records Content-Security-Policy violations (and `Browser.dialogs` every
dialog: alert, confirm), so a test can prove
that nothing a researcher wrote ran.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# screenshots land here when PNEUMOSYFT_SCREENSHOTS names a folder (the README's are made
# with PNEUMOSYFT_SCREENSHOTS=docs/console), else in the test's temporary directory
SCREENSHOTS_ENV = "PNEUMOSYFT_SCREENSHOTS"

WATCH_SCRIPT = """
window.__violations = [];
document.addEventListener('securitypolicyviolation',
    e => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));
"""


class Browser:
    """One headless Chromium and the console of one domain at `url`."""

    def __init__(self, url: str):
        from playwright.sync_api import sync_playwright

        self.url = url
        self.dialogs: dict[int, list[str]] = {}  # id(page): messages of its dialogs
        self._playwright = sync_playwright().start()
        try:
            # root in a container: Chromium's own sandbox needs user namespaces it may not get
            self.chromium = self._playwright.chromium.launch(
                executable_path=CHROMIUM, args=["--no-sandbox"])
        except BaseException:
            self._playwright.stop()
            raise

    def page(self) -> Any:
        """A page in a new context (no cookies), watched (`WATCH_SCRIPT`)."""
        context = self.chromium.new_context(viewport={"width": 1280, "height": 900})
        context.add_init_script(WATCH_SCRIPT)
        page = context.new_page()
        seen = self.dialogs.setdefault(id(page), [])
        page.on("dialog", lambda dialog: (seen.append(dialog.message), dialog.dismiss()))
        return page

    def login(self, email: str, password: str, page: Any = None) -> Any:
        """A page logged in to the console as `email` (on its requests page)."""
        page = page or self.page()
        page.goto(f"{self.url}/admin/login")
        page.fill("input[name=email]", email)
        page.fill("input[name=password]", password)
        page.click("button[type=submit]")
        page.wait_for_load_state()
        return page

    def close(self) -> None:
        self.chromium.close()
        self._playwright.stop()


def screenshot(page: Any, name: str, fallback: Path) -> Path:
    """A full-page PNG of `page` into $PNEUMOSYFT_SCREENSHOTS (or `fallback`)."""
    folder = Path(os.environ.get(SCREENSHOTS_ENV) or fallback)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
