"""The status page in a real headless browser: Debian's chromium driven by its chromedriver
through Selenium (both installed by hil/install.sh), with a fresh profile each time and
nothing that reaches out to the network on its own."""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from types import TracebackType

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
         "--window-size=1280,900")


class Browser:
    def __init__(self) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.profile = Path(tempfile.mkdtemp(prefix="arbiter-chromium-"))
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in (*FLAGS, f"--user-data-dir={self.profile}"):
            options.add_argument(flag)
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)

    def open(self, url: str) -> None:
        self.driver.get(url)

    def text(self, element_id: str) -> str:
        """The element's text as drawn now; "" while the page has not drawn it."""
        return str(self.driver.execute_script(
            "const e = document.getElementById(arguments[0]); return e ? e.textContent : '';", element_id))

    def primary_card(self) -> str:
        """The server drawn as the primary (its card is outlined), "" if none."""
        return str(self.driver.execute_script(
            "const c = document.querySelector('.server.primary .name'); return c ? c.textContent : '';"))

    def wait_text(self, element_id: str, want: str, timeout: float) -> float | None:
        """Monotonic time the element first showed ``want``, None if not within ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.text(element_id) == want:
                return time.monotonic()
            time.sleep(0.05)
        return None

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(path))

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
