"""Headless Chromium from the system's packages, driven by Playwright, for the web page's tests.

The browser is never downloaded: without ``/usr/bin/chromium`` (Debian's ``chromium`` package)
the tests skip and say so. :class:`Seen` keeps what the browser was shown -- every URL it asked
for, every page's source, the text on the page when its screenshot was taken -- so that a test
can look for secrets in all of it; the screenshots go to ``MODELYARD_WEB_SCREENSHOTS`` (the
README's, via ``make screenshots``) or to a temporary directory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


@dataclass
class Seen:
    shots: Path
    urls: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)  # page name -> HTML
    texts: dict[str, str] = field(default_factory=dict)  # screenshot name -> the page's text then
    refusals: list[str] = field(default_factory=list)  # script errors and Content-Security-Policy violations

    def watch(self, page: Any) -> Any:
        page.on("request", lambda request: self.urls.append(request.url))
        page.on("pageerror", lambda error: self.refusals.append(str(error)))
        page.on(
            "console", lambda msg: self.refusals.append(msg.text) if "Content Security Policy" in msg.text else None
        )
        return page

    def look(self, page: Any, name: str) -> None:
        """Keep the page's source, and screenshot it at desktop and phone widths with the text shown then."""
        self.sources[name] = page.content()
        for width, size in (("desktop", DESKTOP), ("phone", PHONE)):
            page.set_viewport_size(size)
            shot = f"{name}-{width}"
            self.texts[shot] = page.inner_text("body")
            page.screenshot(path=str(self.shots / f"{shot}.png"), animations="disabled", caret="hide")
        page.set_viewport_size(DESKTOP)
