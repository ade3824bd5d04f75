"""End-to-end fixtures: a real Chromium (through Playwright's sync API) driving the site served
by pytest-django's ``live_server``.

* Every test in this folder is marked ``e2e`` (run only these with ``-m e2e``, skip them with
  ``-m "not e2e"``).
* The browser (one for all the tests in this folder) is Debian's Chromium, which
  ``bin/ensure-chromium`` installs, or the executable in $SAFEFACE_CHROMIUM. Without one the
  tests skip locally and fail under CI.
* ``page`` fails a test whose pages logged a console error (a Content-Security-Policy violation,
  a static file that did not load, a JavaScript exception) or had a request fail.
* ``screenshot("label")`` saves a full-page PNG under var/test-artifacts/e2e/.
"""
from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.conftest import ensure_plans

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

E2E_DIR = Path(__file__).resolve().parent
ROOT_DIR = E2E_DIR.parents[1]
ARTIFACTS_DIR = ROOT_DIR / "var" / "test-artifacts" / "e2e"
DEFAULT_CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]
VIEWPORT = {"width": 1280, "height": 900}
EXPECT_TIMEOUT_MS = 5_000


def _in_this_folder(item: pytest.Item) -> bool:
    return E2E_DIR in Path(str(item.path)).resolve().parents


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _in_this_folder(item):
            item.add_marker(pytest.mark.e2e)


def chromium_executable() -> str | None:
    """$SAFEFACE_CHROMIUM or /usr/bin/chromium when it is an executable, else None."""
    return shutil.which(os.environ.get("SAFEFACE_CHROMIUM") or DEFAULT_CHROMIUM)


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """One Chromium for all the tests in this folder (they run one after another: pytest-django
    orders every ``live_server`` test into one block).

    Package scope, not session scope, on purpose: while Playwright runs, the main thread has a
    running asyncio loop and DJANGO_ALLOW_ASYNC_UNSAFE must be set. Both end with the last
    browser test, so the tests that run after them keep Django's async-safety checks and do not
    inherit the variable (``manage.py check --deploy`` in a subprocess fails with async.E001
    when it is set)."""
    executable = chromium_executable()
    if executable is None:
        wanted = os.environ.get("SAFEFACE_CHROMIUM") or DEFAULT_CHROMIUM
        message = f"Chromium is not installed at {wanted} (run bin/ensure-chromium, or set SAFEFACE_CHROMIUM)"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI is set: the end-to-end tests must run)")
        pytest.skip(message)

    from playwright.sync_api import expect, sync_playwright

    # Playwright's sync API keeps an asyncio event loop running in the main thread from start()
    # to stop(); Django's ORM then believes it is called from async code and refuses to run.
    # Nothing here is async: the ORM calls are ordinary blocking calls between browser steps.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    playwright = sync_playwright().start()
    try:
        expect.set_options(timeout=EXPECT_TIMEOUT_MS)
        chromium = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()
    finally:
        playwright.stop()
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def live_site(live_server, transactional_db) -> str:
    """The live server's base URL, with the plans the data migration creates in the database.

    ``live_server`` needs ``transactional_db``, which empties every table after each test, so
    the Free and Pro plans are put back first. (Serialized rollback cannot do it here: while
    Playwright's loop runs, asgiref gives the main thread a context-local database connection
    that lacks the serialized contents, so Django skips the restore.)"""
    ensure_plans()
    return live_server.url


@dataclass
class BrowserProblems:
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.console_errors or self.page_errors or self.failed_requests)

    def report(self) -> str:
        lines = []
        for title, entries in (
            ("console errors (CSP violations, resources that failed to load, script errors)", self.console_errors),
            ("uncaught JavaScript exceptions", self.page_errors),
            ("failed requests", self.failed_requests),
        ):
            if entries:
                lines.append(f"{title}:")
                lines += [f"  - {entry}" for entry in entries]
        return "\n".join(lines)


@pytest.fixture
def browser_problems() -> BrowserProblems:
    return BrowserProblems()


@pytest.fixture
def page(browser, live_site, browser_problems) -> Iterator[Page]:
    """A fresh browser context (own cookies) per test, opened on the live server.

    At teardown the test fails if any page logged a console error or a request failed."""
    context = browser.new_context(base_url=live_site, viewport=VIEWPORT)
    context.set_default_timeout(10_000)
    page = context.new_page()
    closing = False

    def on_console(message) -> None:
        if message.type == "error":
            location = message.location or {}
            where = location.get("url") or page.url
            browser_problems.console_errors.append(f"{message.text} (at {where})")

    def on_request_failed(request) -> None:
        failure = request.failure or "unknown failure"
        # ERR_ABORTED: the browser cancelled it itself, e.g. a poll in flight when the page
        # navigated away or the context closed. Not a fault of the site.
        if closing or "ERR_ABORTED" in failure:
            return
        browser_problems.failed_requests.append(f"{request.method} {request.url}: {failure}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: browser_problems.page_errors.append(f"{error} (on {page.url})"))
    page.on("requestfailed", on_request_failed)
    try:
        yield page
    finally:
        closing = True
        context.close()
    if browser_problems:
        pytest.fail("The browser reported problems:\n" + browser_problems.report(), pytrace=False)


@pytest.fixture
def screenshot(page, request) -> Callable[[str], Path]:
    """``screenshot("label")`` saves a full-page PNG as var/test-artifacts/e2e/<test>-<label>.png."""
    test_name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name).strip("_")

    def take(label: str) -> Path:
        ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS_DIR / f"{test_name}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', label)}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take
