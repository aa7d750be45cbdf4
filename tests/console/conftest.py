"""Debian's chromium, headless, driven by Playwright for Python (make browser-tools installs
it; Playwright's own browser download is never used). The fake microphone plays a WAV file
(``fake_mic``); what the page plays is captured inside the page by the console's own code.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# No background traffic (this machine's network is closed: every such try is a refused
# connection and a log line), no sandbox (tests run as root in CI), fake media devices.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
         "--autoplay-policy=no-user-gesture-required"]


@contextlib.asynccontextmanager
async def chromium(fake_mic: Path | None = None):
    """A headless chromium; ``fake_mic`` is a WAV file the microphone plays (in a loop)."""
    args = list(FLAGS)
    if fake_mic is not None:
        args.append(f"--use-file-for-fake-audio-capture={fake_mic}")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                   args=args)
        try:
            yield browser
        finally:
            await browser.close()


class ConsoleErrors(list):
    """Errors the page logged or threw, collected while a test runs."""

    def watch(self, page: Page) -> Page:
        def on_console(message: ConsoleMessage) -> None:
            if message.type == "error":
                self.append(f"console: {message.text}")

        page.on("console", on_console)
        page.on("pageerror", lambda error: self.append(f"page: {error}"))
        return page


@pytest.fixture
async def browser() -> Browser:
    async with chromium() as b:
        yield b


@pytest.fixture
def console_errors() -> ConsoleErrors:
    return ConsoleErrors()
