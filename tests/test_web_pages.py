"""The tenant's settings page in a real headless Chromium: sign-in, keys the fake provider
accepts and refuses, models added, disabled and deleted, a CLI job followed live to 100%,
another tenant that sees none of it, CSRF and the security headers, and no secret anywhere
the browser or the server's log shows. A real API server, worker, Redis and Postgres."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api_stack import KEY, ApiServer, cli, make_token, start_api
from tests.conftest import Stack, Worker, empty_broker, start_worker
from tests.fakeprovider import FakeProvider, fake_tokens
from tests.web_browser import CHROMIUM, CHROMIUM_ARGS, DESKTOP, Seen

pytestmark = [pytest.mark.services, pytest.mark.slow]

REFUSED_KEY = "sk-test-refused-key-7777"
MODEL = "text-embedding-3-small@OpenAI"
TEXTS = [f"web page text number {i}" for i in range(20)]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(f"no {CHROMIUM}: install Debian's chromium package (the tests never download a browser)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the test extra's playwright is not installed")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeProvider]:
    # Slow enough that a 20-chunk job is still running when the page first shows it.
    with FakeProvider(keys={KEY}, latency_ms=250) as fp:
        yield fp


@pytest.fixture(scope="module")
def api(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    server = start_api(stack, tmp_path_factory.mktemp("web-api"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def worker(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    empty_broker(stack.redis_url)
    w = start_worker(stack, tmp_path_factory.mktemp("web-workers"), pool="threads", concurrency=2)
    yield w
    w.stop()


@pytest.fixture(scope="module")
def tenants(stack: Stack) -> dict[str, dict[str, str]]:
    """Two tenants, each with a token: ``a`` starts with the default models, ``b`` with none."""
    from models.db import session_scope
    from models.tenants import create_tenant

    made = {}
    for name, defaults in (("a", True), ("b", False)):
        with session_scope() as session:
            tenant_id = create_tenant(session, f"web-{name}-{os.urandom(3).hex()}", defaults=defaults)
        made[name] = {"id": tenant_id, "token": make_token(stack, tenant_id)["token"]}
    return made


@pytest.fixture(scope="module")
def seen(tmp_path_factory: pytest.TempPathFactory) -> Seen:
    shots = Path(os.environ.get("MODELYARD_WEB_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    return Seen(shots)


def new_page(browser: Any, seen: Seen) -> Any:
    return seen.watch(browser.new_context(viewport=DESKTOP).new_page())


def sign_in(page: Any, api: ApiServer, token: str) -> None:
    page.goto(f"{api.base_url}/web/models")
    assert page.url.endswith("/web/sign-in")  # not signed in: sent to the sign-in page
    page.fill("#token", token)
    page.click("button:has-text('Sign in')")


@pytest.fixture(scope="module")
def page_a(browser: Any, api: ApiServer, tenants: dict, seen: Seen) -> Any:
    page = new_page(browser, seen)
    page.goto(f"{api.base_url}/web/sign-in")
    seen.look(page, "sign-in")
    sign_in(page, api, tenants["a"]["token"])
    assert page.url.endswith("/web/models")
    return page


def row(page: Any, model: str, model_type: str) -> Any:
    return page.locator("tr", has=page.locator(f"td:text-is('{model}')")).filter(has_text=model_type)


def test_keys_and_models(page_a: Any, api: ApiServer, provider: FakeProvider, seen: Seen) -> None:
    page = page_a
    base = api.base_url
    from playwright.sync_api import expect

    # Providers: filtered without script, by query parameters.
    page.goto(f"{base}/web/providers")
    page.fill("#name", "openai")
    page.select_option("#type", "embedding")
    page.click("button:has-text('Filter')")
    assert "name=openai" in page.url and "type=embedding" in page.url
    names = page.locator(".cards h2").all_inner_texts()
    assert "OpenAI" in names and "Anthropic" not in names and "Jina" not in names
    card = page.locator(".card", has=page.locator("h2 a:text-is('OpenAI')"))
    assert card.locator("a[target=_blank]").get_attribute("href") == "https://platform.openai.com/api-keys"
    page.goto(f"{base}/web/providers?type=rerank")
    seen.look(page, "providers")

    # Add one model (its key checked with a real call), then disable, enable and delete it.
    page.goto(f"{base}/web/providers/OpenAI")
    page.select_option("#model-choice", "embedding|text-embedding-3-small")
    page.fill("#model-api_key", KEY)
    page.fill("#model-base_url", provider.base_url)
    page.click("button:has-text('Check and add the model')")
    expect(page.get_by_role("status")).to_contain_text(f"{MODEL} (embedding) added")
    page.goto(f"{base}/web/models")
    mine = row(page, "text-embedding-3-small", "embedding")
    expect(mine.locator("td[data-label=Status]")).to_have_text("enabled")
    expect(mine.locator("td[data-label=Key]")).to_have_text("valid …0001")
    mine.get_by_role("button", name="Disable").click()
    expect(page.get_by_role("status")).to_have_text("The model is disabled.")
    expect(mine.locator("td[data-label=Status]")).to_have_text("disabled")
    mine.get_by_role("button", name="Enable").click()
    expect(mine.locator("td[data-label=Status]")).to_have_text("enabled")
    page.once("dialog", lambda dialog: dialog.accept())  # the script asks before deleting
    mine.get_by_role("button", name="Delete").click()
    expect(page.get_by_role("status")).to_have_text("The model is deleted.")
    expect(mine).to_have_count(0)
    assert provider.count("embeddings") >= 1

    # A key the provider refuses: nothing saved, each model's classified error shown.
    page.goto(f"{base}/web/providers/OpenAI")
    page.fill("#key-api_key", REFUSED_KEY)
    page.fill("#key-base_url", provider.base_url)
    page.click("button:has-text('Check and save the key')")
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("The key was refused; nothing was saved.")
    codes = alert.locator("td[data-label=Error]").all_inner_texts()
    assert codes[0] == "AUTHENTICATION" and len(codes) > 10 and set(codes[1:]) == {"NOT_TRIED"}
    expect(alert.locator("tbody tr").first).to_contain_text("Incorrect API key")
    assert page.input_value("#key-api_key") == ""  # the key is not put back into the form
    seen.look(page, "key-refused")
    page.goto(f"{base}/web/models")
    expect(page.locator("section.card h2", has_text="OpenAI")).to_have_count(0)

    # A key it accepts: saved for every OpenAI model; only its last characters are shown.
    page.goto(f"{base}/web/providers/OpenAI")
    page.fill("#key-api_key", KEY)
    page.fill("#key-base_url", provider.base_url)
    page.click("button:has-text('Check and save the key')")
    expect(page.get_by_role("status")).to_contain_text("Key saved")
    expect(page.locator("main")).to_contain_text("Key ending in …0001, valid")
    seen.look(page, "provider")
    page.goto(f"{base}/web/models")
    expect(row(page, "text-embedding-3-small", "embedding").locator("td[data-label=Key]")).to_have_text("valid …0001")
    expect(page.locator("section.card h2")).to_have_text(["Builtin", "OpenAI"])

    # The default embedding model: chosen among the enabled ones, saved, shown as the selection.
    page.select_option("#default-embedding", MODEL)
    page.get_by_role("button", name="Save the default embedding model").click()
    expect(page.get_by_role("status")).to_have_text("The default model is saved.")
    assert page.input_value("#default-embedding") == MODEL
    seen.look(page, "models")


def test_a_cli_job_is_followed_live_to_100_percent(
    page_a: Any, api: ApiServer, stack: Stack, worker: Worker, tenants: dict, seen: Seen, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    page = page_a
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n")
    done = cli(
        stack, "embed", "--tenant", tenants["a"]["id"], "--model", MODEL, str(texts), "--chunk-size", "1", "--json"
    )
    assert done.returncode == 0, done.stderr
    job_id = json.loads(done.stdout)["job_id"]

    page.goto(f"{api.base_url}/web/jobs")
    job_row = page.locator("tr", has=page.locator(f"a:text-is('{job_id}')"))
    assert job_row.get_attribute("data-progress-url")  # shown while it runs: the script follows it
    first = job_row.locator("[data-field=percent]").inner_text()
    assert first != "100%", "the job finished before the page showed it; nothing was followed"
    page.evaluate("window.stillTheSamePage = true")
    expect(job_row.locator("[data-field=percent]")).to_have_text("100%", timeout=60_000)
    expect(job_row.locator("[data-field=status]")).to_have_text("succeeded")
    expect(job_row.locator("[data-field=tokens]")).to_have_text(f"{fake_tokens(TEXTS):,}")
    assert page.evaluate("window.stillTheSamePage") is True  # updated in place, not reloaded
    job_cost = job_row.locator("[data-field=cost]").inner_text()
    seen.look(page, "jobs")

    page.click(f"a:text-is('{job_id}')")
    expect(page.locator("dl.facts")).to_contain_text("20 total, 20 succeeded, 0 failed")
    with page.expect_download() as download:
        page.click("a:has-text('Download results')")
    rows = [json.loads(line) for line in Path(download.value.path()).read_text().splitlines()]
    assert sorted(r["custom_id"] for r in rows) == sorted(f"{texts.name}:{i + 1}" for i in range(20))
    seen.look(page, "job")

    page.goto(f"{api.base_url}/web/usage")
    by_model = row(page, MODEL, "embedding")
    expect(by_model.locator("td[data-label=Tokens]")).to_have_text(f"{fake_tokens(TEXTS):,}")
    assert float(job_cost) > 0 and by_model.locator("td[data-label='Cost (USD)']").inner_text() == job_cost
    seen.look(page, "usage")

    # A running job cancelled from its page.
    texts.write_text("\n".join(f"to be cancelled {i}" for i in range(40)) + "\n")
    done = cli(
        stack, "embed", "--tenant", tenants["a"]["id"], "--model", MODEL, str(texts), "--chunk-size", "1", "--json"
    )
    assert done.returncode == 0, done.stderr
    page.goto(f"{api.base_url}/web/jobs/{json.loads(done.stdout)['job_id']}")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("button:has-text('Cancel the job')")
    expect(page.get_by_role("status")).to_have_text("The job is cancelled.")
    expect(page.locator("[data-field=status]")).to_have_text("cancelled")
    tenants["a"]["job"] = job_id


def test_a_second_tenant_sees_none_of_it(browser: Any, api: ApiServer, tenants: dict, seen: Seen) -> None:
    from playwright.sync_api import expect

    # Signed in with the keyboard alone: the skip link first, then the labelled token field, then Enter.
    page = new_page(browser, seen)
    page.goto(f"{api.base_url}/web/sign-in")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "token" and page.get_by_label("API token").count() == 1
    page.keyboard.type(tenants["b"]["token"])
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_contain_text("You have no models yet.")
    page.goto(f"{api.base_url}/web/jobs")
    expect(page.locator("main")).to_contain_text("No jobs yet.")
    page.goto(f"{api.base_url}/web/usage")
    expect(page.locator("main")).to_contain_text("No usage yet.")
    job_id = tenants["a"]["job"]
    assert page.goto(f"{api.base_url}/web/jobs/{job_id}").status == 404
    assert page.goto(f"{api.base_url}/web/jobs/{job_id}/progress.json").status == 404
    assert page.goto(f"{api.base_url}/web/jobs/{job_id}/results").status == 404
    # Tenant a's model, named in b's session (with b's CSRF token): not b's to change.
    page.goto(f"{api.base_url}/web/models")
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    form = {"csrf": csrf, "model": MODEL, "type": "embedding", "action": "disable"}
    assert page.request.post(f"{api.base_url}/web/models/status", form=form).status == 404
    form = {"csrf": csrf, "model": MODEL, "type": "embedding"}
    assert page.request.post(f"{api.base_url}/web/models/default", form=form).status == 400
    page.context.close()


def test_csrf_headers_cookies_and_sign_out(page_a: Any, api: ApiServer) -> None:
    from playwright.sync_api import expect

    page = page_a
    response = page.goto(f"{api.base_url}/web/models")
    headers = response.headers
    csp = headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe" not in csp
    assert headers["x-content-type-options"] == "nosniff" and headers["x-frame-options"] == "DENY"
    cookies = {c["name"]: c for c in page.context.cookies()}
    for name in ("modelyard_token", "modelyard_csrf"):
        assert cookies[name]["httpOnly"] and cookies[name]["sameSite"] == "Strict" and cookies[name]["path"] == "/web"

    # A POST without the session's CSRF token (or with another) is refused and changes nothing.
    form = {"model": MODEL, "type": "embedding", "action": "disable"}
    url = f"{api.base_url}/web/models/status"
    assert page.request.post(url, form=form).status == 403
    assert page.request.post(url, form={**form, "csrf": "forged"}).status == 403
    page.reload()
    expect(row(page, "text-embedding-3-small", "embedding").locator("td[data-label=Status]")).to_have_text("enabled")
    # The JSON API keeps its own answers (no page headers, JSON errors).
    assert "content-security-policy" not in httpx.get(f"{api.base_url}/healthz").headers

    page.click("button:has-text('Sign out')")
    expect(page.get_by_role("status")).to_have_text("You are signed out.")
    page.goto(f"{api.base_url}/web/jobs")
    assert page.url.endswith("/web/sign-in")
    assert not any(c["name"] == "modelyard_token" for c in page.context.cookies())


def test_no_secret_in_pages_urls_log_or_screenshots(api: ApiServer, tenants: dict, seen: Seen) -> None:
    secrets = [KEY, REFUSED_KEY, tenants["a"]["token"], tenants["b"]["token"]]
    secrets += [t["token"].rsplit("_", 1)[1] for t in tenants.values()]  # a token's secret part alone
    shots = sorted(p.name for p in seen.shots.glob("*.png"))
    names = ("sign-in", "providers", "provider", "key-refused", "models", "jobs", "job", "usage")
    assert shots == sorted(f"{n}-{w}.png" for n in names for w in ("desktop", "phone"))
    assert len(seen.urls) > 30 and set(seen.sources) == set(names)
    where = {
        **{f"source of {n}": html for n, html in seen.sources.items()},
        **{f"text of {n} at its screenshot": text for n, text in seen.texts.items()},
        "the URLs visited": "\n".join(seen.urls),
        "the api server's log": api.log_text(),
    }
    leaks = [f"{place}: secret ending {s[-4:]}" for place, text in where.items() for s in secrets if s in text]
    assert not leaks
    assert re.search(r"POST /web/sign-in HTTP/1.1\" 303", api.log_text())  # the log did see the sign-in
    assert not seen.refusals  # no script error, no Content-Security-Policy violation
