"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against the app
served by uvicorn on SQLite with two mirrors and an hour of ledger history. The page must
render the mirrors, the RPO table and a chart per mirror with no console error; the
screenshot is kept in the test artifacts (CLOUDMIRROR_TEST_ARTIFACTS, default
.cloudmirror/test-artifacts/dashboard.png).

Without Chromium (`make browser` installs it) the browser tests are skipped with the reason,
except in CI, where they must run."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import httpx
import pytest

from api.app import create_app
from cloudmirror.config import Config, validate_config
from cloudmirror.ledger.repo import DeadLetter, Ledger, NewVersion, TargetPlan
from cloudmirror.services import access
from cloudmirror.services import mirrors as mirror_service
from tests.api.live import serving
from tests.conftest import ARTIFACTS, unique_name

CHROMIUM = os.environ.get("CLOUDMIRROR_CHROMIUM", "/usr/bin/chromium")
SRC, A, B = (f"memory://{unique_name(p)}" for p in ("photos", "photos-eu", "photos-dr"))
DOCS_SRC, DOCS_DST = f"memory://{unique_name('docs')}", f"memory://{unique_name('docs-dr')}"


# ------------------------------------------------------------------ an app with history
def dashboard_config(ledger_url: str) -> Config:
    return validate_config({"ledger": ledger_url, "mirrors": [
        {"name": "photos", "source": SRC, "targets": [A, B], "events": [], "rpo_objective": "1m"},
        {"name": "docs", "source": DOCS_SRC, "targets": [DOCS_DST], "events": [], "rpo_objective": "5m"}]})


@dataclass
class History:
    """Writes and their outcomes recorded through the ledger's own functions at given times."""

    ledger: Ledger
    n: int = 0
    outcomes: list = field(default_factory=list)  # (at, mirror, target, key, error or None)

    def put(self, mirror: str, key: str, seen: float, done: dict[str, float | None], *, size: int = 2_000_000) -> None:
        """A write seen at `seen`; per target, when its copy completes (None: still pending)."""
        self.n += 1
        self.ledger.record([NewVersion(mirror=mirror, key=key, token=f"t{self.n}", op="put", source_time=seen - 0.2,
                                       size=size, etag=f"e{self.n}", targets=[TargetPlan(t) for t in done])], now=seen)
        self.outcomes += [(at, mirror, t, key, None) for t, at in done.items() if at is not None]

    def fail(self, mirror: str, target: str, key: str, at: float, error: str) -> None:
        """The pending copy of `key` to `target` gives up at `at`."""
        self.outcomes.append((at, mirror, target, key, error))

    def settle(self) -> None:
        for at, mirror, target, key, error in sorted(self.outcomes):
            jobs = self.ledger.claim(mirror, target, "e2e", 10_000, 1e9, now=at)
            mine = [j for j in jobs if j.key == key]
            if error:
                for j in mine:
                    assert self.ledger.fail(j.id, "e2e", error)
            else:
                self.ledger.complete_many("e2e", [dict(id=j.id, bytes=2_000_000) for j in mine], now=at)
            self.ledger.release("e2e", [j.id for j in jobs if j.key != key])
        self.outcomes.clear()


def write_last_hour(ledger: Ledger, now: float) -> None:
    """photos -> A: a write every 2 min, copied in 1 s, but A was down for 3 minutes half an
    hour ago (RPO over the 1 min objective) and one write is in flight now. photos -> B: copies
    in 2 s; one copy failed 10 minutes ago. docs: a write every 5 min copied in 3 s, and one
    pending for 7 minutes now (over its 5 min objective)."""
    h = History(ledger)
    outage = (now - 1900, now - 1720)
    for i, t in enumerate(range(int(now) - 3500, int(now) - 120, 120)):
        done_a = outage[1] if outage[0] <= t < outage[1] else t + 1
        h.put("photos", f"2026/img-{i:03}.jpg", t, {A: done_a, B: t + 2})
    h.put("photos", "raw/scan-0043.tif", now - 600, {A: now - 599, B: None})
    h.put("photos", "2026/img-last.jpg", now - 20, {A: None, B: now - 18})
    for i, t in enumerate(range(int(now) - 3300, int(now) - 60, 300)):
        h.put("docs", f"contracts/c-{i:02}.pdf", t, {DOCS_DST: t + 3}, size=80_000)
    h.put("docs", "contracts/draft.pdf", now - 420, {DOCS_DST: None}, size=80_000)
    h.fail("photos", B, "raw/scan-0043.tif", now - 560, "AccessDenied: s3:PutObject on photos-dr")
    h.settle()
    ledger.record([], [DeadLetter(feed="https://sqs.eu-west-1.amazonaws.com/123456789012/photos-events",
                                  body="{not json", reason="body is not JSON", message_id="m-1")], now=now - 300)




@dataclass
class Site:
    url: str
    token: str


@pytest.fixture
def site(sqlite_url):
    config = dashboard_config(sqlite_url)
    ledger = Ledger(sqlite_url)
    try:
        mirror_service.seed(config, ledger)
        write_last_hour(ledger, time.time())
        token, _ = access.create_key(ledger, "dashboard-e2e", "viewer")
        with serving(create_app(config, ledger)) as url:
            yield Site(url, token)
    finally:
        ledger.close()


# ------------------------------------------------------------------ the browser
@pytest.fixture(scope="module")
def browser():
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        reason = f"Chromium is not installed at {CHROMIUM} (`make browser` installs Debian's chromium)"
        if os.environ.get("CI"):
            raise RuntimeError(f"CI must run the dashboard tests: {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@dataclass
class Page:
    """A fresh browser context's page, and what its console said."""

    page: object
    problems: list[str]

    def assert_quiet(self) -> None:
        assert self.problems == [], self.problems


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    problems: list[str] = []
    pg.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    pg.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    yield Page(pg, problems)
    context.close()


def test_the_dashboard_shows_mirrors_rpo_failures_dead_letters_and_a_chart(page, site):
    from playwright.sync_api import expect

    pg = page.page
    pg.goto(f"{site.url}/#key={site.token}")

    mirrors = pg.locator("#mirrors tbody tr[data-mirror]")
    expect(mirrors).to_have_count(2)
    expect(pg.locator("#mirrors tr[data-mirror=photos]")).to_contain_text(SRC)
    expect(pg.locator("#mirrors tr[data-mirror=photos]")).to_contain_text(B)
    expect(pg.locator("#targets tbody tr")).to_have_count(3)
    expect(pg.locator(f'#targets tr[data-target="{DOCS_DST}"] .badge')).to_have_text("breached")  # 7 min behind
    expect(pg.locator(f'#targets tr[data-target="{A}"] .badge')).to_have_text("met")  # 20 s behind
    expect(pg.locator(f'#targets tr[data-target="{A}"]')).to_contain_text("1.9 MiB")  # its backlog: one write
    expect(pg.locator(f'#targets tr[data-target="{B}"] .badge')).to_have_text("breached")  # held by its failed copy
    expect(pg.locator("#failures tbody")).to_contain_text("raw/scan-0043.tif")
    expect(pg.locator("#failures tbody")).to_contain_text("AccessDenied")
    expect(pg.locator("#dead-count")).to_have_text("1 pending")
    expect(pg.locator("#dead-letters tbody tr[data-dead-letter]")).to_have_count(1)
    expect(pg.locator("#dead-letters tbody")).to_contain_text("body is not JSON")

    charts = pg.locator("#charts svg.rpo-chart")
    expect(charts).to_have_count(2)
    expect(pg.locator("#charts svg.rpo-chart polyline.rpo")).to_have_count(2)
    expect(pg.locator("#charts svg.rpo-chart line.objective")).to_have_count(2)
    points = pg.locator("figure[data-mirror=photos] polyline.rpo").get_attribute("points").split()
    assert len(points) > 10, points
    assert "key=" not in pg.url  # the key does not stay in the address bar
    expect(pg.locator("#error")).to_be_hidden()

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    pg.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    page.assert_quiet()


def test_without_a_key_the_page_asks_for_one_and_the_data_stays_closed(page, site):
    from playwright.sync_api import expect

    with httpx.Client(base_url=site.url) as http:
        for path in ("/v1/mirrors", "/v1/status", "/v1/failures", "/metrics"):
            assert http.get(path).status_code == 401, path
        shell = http.get("/")
        assert shell.status_code == 200 and shell.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in shell.headers["content-security-policy"]
        assert http.get("/ui/dashboard.js").status_code == 200
        assert "/" not in http.get("/openapi.json").json()["paths"]

    pg = page.page
    pg.goto(site.url + "/")
    expect(pg.locator("#key-form")).to_be_visible()
    expect(pg.locator("#data")).to_be_hidden()
    page.assert_quiet()

    pg.fill("#key-input", site.token)
    pg.click("#key-form button[type=submit]")
    expect(pg.locator("#mirrors tbody tr[data-mirror]")).to_have_count(2)
    expect(pg.locator("#key-form")).to_be_hidden()
    page.assert_quiet()


def test_a_refused_key_brings_back_the_form_with_the_reason(page, site):
    from playwright.sync_api import expect

    pg = page.page
    pg.goto(f"{site.url}/#key=cm_not-a-key")
    expect(pg.locator("#key-form")).to_be_visible()
    expect(pg.locator("#key-message")).to_contain_text("invalid or revoked API key")
    assert pg.evaluate("sessionStorage.getItem('cloudmirror.apiKey')") is None
    # the browser itself logs the refused request; nothing else may complain
    page.problems[:] = [p for p in page.problems if "status of 401" not in p]
    page.assert_quiet()


def test_a_failing_call_shows_an_inline_error_and_no_script_error(page, site):
    from playwright.sync_api import expect

    pg = page.page
    pg.route("**/v1/failures*", lambda route: route.fulfill(
        status=503, content_type="application/json",
        body='{"error": {"code": "unavailable", "message": "the ledger is down"}}'))
    pg.goto(f"{site.url}/#key={site.token}")
    expect(pg.locator("#error")).to_be_visible()
    expect(pg.locator("#error")).to_contain_text("the ledger is down")
    # the browser logs the failed request itself; the page's own code says nothing
    page.problems[:] = [p for p in page.problems if "status of 503" not in p]
    page.assert_quiet()
