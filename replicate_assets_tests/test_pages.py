"""The page `replicate-assets serve` shows people: search, similar products and duplicates, the review, pictures
through the thumbnail route, the key asked once beyond loopback. Through real uvicorn, a real embedded shop, and
headless Chromium with JavaScript off."""

import os
import re
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
from conftest import creates, make_searchable, start_serve, stop

from replicate_assets.db import engine_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
HOSTILE = "<img src=x onerror=alert(1)>"
BROKEN_PRODUCT = 3  # the sample shop's product whose one image is a dead URL
SIGNATURE = "X-Amz-Signature=s3cr3tpagesig"
needs_chromium = pytest.mark.skipif(
    not CHROMIUM and not os.environ.get("CI"), reason="no Chromium here (apt-get install chromium)"
)


@pytest.fixture
def shop(sqlite_url, image_server, fresh_emulator, tmp_path):
    """An embedded, listed shop: product 6 named like an attack, image 1 behind a signed URL."""
    shop, env = make_searchable(sqlite_url, image_server, fresh_emulator, tmp_path)
    with engine_for(sqlite_url).begin() as conn:
        conn.execute(sa.text("UPDATE products SET name = :name WHERE id = 6"), {"name": HOSTILE})
        path = conn.execute(sa.text("SELECT path FROM product_images WHERE id = 1")).scalar_one()
        signed = (path if path.startswith("http") else f"{image_server.base_url}/{path}") + f"?{SIGNATURE}"
        conn.execute(sa.text("UPDATE product_images SET path = :path WHERE id = 1"), {"path": signed})
    return shop, env


@pytest.fixture
def page(shop) -> Iterator[tuple[str, dict]]:
    _, env = shop
    server, base, health = start_serve({**env, "SEARCH_QUERIES_PER_MINUTE": "2"})
    try:
        assert health.status_code == 200, health.text
        yield base, env
    finally:
        stop(server, signal.SIGINT)


def browser_page(playwright, width: int = 1280):
    assert CHROMIUM, "CI must have Chromium: .ci/run installs Debian's chromium package"
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
    context = browser.new_context(java_script_enabled=False, viewport={"width": width, "height": 900})
    return browser, context.new_page()


def pictures_loaded(page) -> list[tuple[str, int]]:
    """(src, natural width) of every picture on the page, once loaded (works with the page's JavaScript off)."""
    page.wait_for_load_state("load")
    return page.eval_on_selector_all("img", "els => els.map(e => [e.getAttribute('src'), e.naturalWidth])")


def keep_screenshot(path: Path, name: str) -> None:
    """Refresh the README's pictures when asked (REPLICATE_ASSETS_PAGE_SHOTS=docs); never otherwise."""
    folder = os.environ.get("REPLICATE_ASSETS_PAGE_SHOTS")
    if folder:
        shutil.copy(path, Path(folder) / name)


@needs_chromium
def test_search_then_similar_products_by_keyboard_with_real_pictures(page, fresh_emulator, tmp_path):
    from playwright.sync_api import sync_playwright

    base, _ = page
    with sync_playwright() as playwright:
        browser, tab = browser_page(playwright)
        tab.goto(f"{base}/")
        assert tab.evaluate("document.activeElement.name") == "text"  # the words box has the focus
        tab.keyboard.type("red leather bag")
        tab.keyboard.press("Enter")
        tab.wait_for_url(re.compile(r"\?text=red\+leather\+bag"))
        cards = tab.locator("ul[aria-label=results] a.card")
        assert cards.count() >= 10
        shown = pictures_loaded(tab)
        assert shown and all(src.startswith("/thumbnails/") and width > 0 for src, width in shown), shown
        assert "red" in cards.first.inner_text().lower()
        tab.screenshot(path=str(tmp_path / "search.png"), full_page=False)

        # Tab through the three forms to the first result, then open it with Enter.
        first = cards.first.get_attribute("href")
        for _ in range(12):
            tab.keyboard.press("Tab")
            if tab.evaluate("document.activeElement.className") == "card":
                break
        assert tab.evaluate("document.activeElement.getAttribute('href')") == first
        tab.keyboard.press("Enter")
        tab.wait_for_url(re.compile(r"\?like=\d+$"))
        assert tab.get_by_role("heading", name=re.compile("Similar products")).is_visible()
        assert tab.get_by_role("heading", name="Its duplicates").is_visible()
        shown = pictures_loaded(tab)
        assert len(shown) > 5 and all(width > 0 for _, width in shown), shown
        tab.screenshot(path=str(tmp_path / "similar.png"), full_page=False)

        tab.get_by_role("link", name="Review").click()  # the review: every picture loads but a failed image's
        tab.wait_for_url(re.compile(r"/review$"))
        shown = pictures_loaded(tab)
        failed = {f"/thumbnails/{image}" for image in re.findall(r"<td>#(\d+)</td>", tab.content())}
        assert failed and len(shown) > 40
        assert all(width > 0 for src, width in shown if src not in failed), shown
        browser.close()
    assert creates(fresh_emulator) == 1  # the words cost one prediction; the product's list none
    keep_screenshot(tmp_path / "search.png", "page-search.png")
    keep_screenshot(tmp_path / "similar.png", "page-similar.png")


@needs_chromium
def test_names_from_the_shop_are_text_never_markup_and_no_url_reaches_the_page(page):
    from playwright.sync_api import sync_playwright

    base, _ = page
    pages = [requests.get(f"{base}{path}", timeout=30) for path in ("/?like=6", "/?like=4", "/review", "/?text=red")]
    for answer in pages:
        assert answer.status_code == 200, answer.url + re.findall(r"role=.alert.>(.*?)<", answer.text)[0]
        assert HOSTILE not in answer.text and "s3cr3tpagesig" not in answer.text
        assert 'src="http' not in answer.text  # pictures come by id, never by the shop's URL
    assert "&lt;img src=x onerror=alert(1)&gt;" in pages[0].text
    with sync_playwright() as playwright:
        browser, tab = browser_page(playwright)
        dialogs = []
        tab.on("dialog", lambda dialog: dialogs.append(dialog.message))
        tab.goto(f"{base}/?like=6")
        assert tab.get_by_role("heading", name=re.compile(re.escape(HOSTILE))).is_visible()
        pictures_loaded(tab)
        browser.close()
    assert dialogs == []
    signed = requests.get(f"{base}/thumbnails/1", timeout=30)  # the signed image shows, its URL stays inside
    assert signed.status_code == 200 and signed.headers["content-type"] == "image/png"


def test_thumbnails_follow_the_pipelines_rules_and_say_why_not(page, shop):
    base, _ = page
    sample, _ = shop
    by_reason = {why: image for image, why in sample.broken.items()}
    dead = requests.get(f"{base}/thumbnails/{by_reason['dead URL (404)']}", timeout=30)
    assert (
        dead.status_code == 502
        and dead.text == f"product image {by_reason['dead URL (404)']}: its host answered HTTP 404"
    )
    empty = requests.get(f"{base}/thumbnails/{by_reason['empty path']}", timeout=30)
    assert empty.status_code == 404 and "cannot be shown: invalid image path: the path is empty" in empty.text
    assert requests.get(f"{base}/thumbnails/99999", timeout=30).status_code == 404
    assert requests.get(f"{base}/thumbnails/abc", timeout=30).status_code == 400


def test_the_review_shows_a_sample_with_top_five_lonely_products_and_failed_images(page, shop):
    base, _ = page
    sample, _ = shop
    review = requests.get(f"{base}/review", timeout=30)
    assert review.status_code == 200, review.text
    rows = re.findall(r'aria-label="top 5 of product (\d+)"', review.text)
    assert len(rows) == 8
    for product in rows:
        listed = requests.get(f"{base}/products/{product}/similar?limit=5", timeout=30).json()["results"]
        block = review.text.split(f'aria-label="top 5 of product {product}"')[1].split("</ul>")[0]
        assert re.findall(r'href="/\?like=(\d+)"', block) == [str(hit["product_id"]) for hit in listed]
    assert "Images that failed" in review.text
    for image, why in sample.broken.items():
        if why == "dead URL (404)":
            assert f"<td>#{image}</td>" in review.text and "HTTP 404" in review.text


def test_paid_queries_from_the_page_are_capped_and_errors_are_pages(page, fresh_emulator):
    base, _ = page
    first = requests.get(f"{base}/?text=green+ceramic+mug", timeout=30)
    again = requests.get(f"{base}/?text=Green  Ceramic MUG", timeout=30)  # the same query to the model: cached
    assert first.status_code == again.status_code == 200
    assert "1 Replicate prediction" in first.text and "answered from the cache" in again.text
    second = requests.get(f"{base}/?text=blue+wool+hat", timeout=30)
    capped = requests.get(f"{base}/?text=white+desk+lamp", timeout=30)
    assert second.status_code == 200 and capped.status_code == 429
    assert "the cap of 2 new text or image queries a minute is reached" in capped.text
    assert capped.headers["retry-after"].isdigit()
    assert creates(fresh_emulator) == 2
    bad = requests.get(f"{base}/?like=abc", timeout=30)
    assert bad.status_code == 400 and "product id &#39;abc&#39; is not a whole number" in bad.text
    assert requests.get(f"{base}/?like=99999", timeout=30).status_code == 404
    both = requests.get(f"{base}/?text=bag&like=3", timeout=30)
    assert both.status_code == 400 and "ask with one of" in both.text
    unembedded = requests.get(f"{base}/?like={BROKEN_PRODUCT}", timeout=30)  # its only image is a dead URL
    assert unembedded.status_code == 404 and "has no embedded image" in unembedded.text
    assert f'<span class="meta">#{BROKEN_PRODUCT}</span>' in unembedded.text  # the product is still shown


def test_beyond_loopback_the_page_asks_for_the_key_once(shop):
    _, env = shop
    key = "page-k3y-for-the-shop"
    server, base, _ = start_serve({**env, "SEARCH_API_KEY": key}, "--host", "0.0.0.0")
    try:
        browser = requests.Session()
        asked = browser.get(f"{base}/?like=4", timeout=30)
        assert asked.status_code == 401 and 'name="key"' in asked.text and 'value="/?like=4"' in asked.text
        assert browser.get(f"{base}/thumbnails/2", timeout=30).status_code == 401
        wrong = browser.post(f"{base}/login", data={"key": "nope", "next": "/?like=4"}, timeout=30)
        assert wrong.status_code == 401 and "That is not the key" in wrong.text
        signed_in = browser.post(
            f"{base}/login", data={"key": key, "next": "/?like=4"}, timeout=30, allow_redirects=False
        )
        assert signed_in.status_code == 303 and signed_in.headers["location"] == "/?like=4"
        cookie = signed_in.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and key not in cookie
        assert browser.get(f"{base}/?like=4", timeout=30).status_code == 200
        assert browser.get(f"{base}/thumbnails/2", timeout=30).status_code == 200
        assert requests.get(f"{base}/review", timeout=30).status_code == 401  # another browser: asked again
        away = browser.post(f"{base}/login", data={"key": key, "next": "//evil.example/"}, allow_redirects=False)
        assert away.headers["location"] == "/"
        assert requests.post(f"{base}/login", data={"key": "x" * 100_000}, timeout=30).status_code == 413
    finally:
        out, err = stop(server, signal.SIGINT)
    assert key not in out + err
