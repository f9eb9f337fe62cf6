"""The page at ``GET /``, in headless Chromium against a real development server.

What a person does there: draw a digit, upload a photo of one, see the 28x28 image the model saw,
price a house; on a desktop and on a phone-sized screen. The desktop screenshot is the README's
(``UPDATE_SCREENSHOT=1`` rewrites docs/page.png; otherwise it goes to a temporary folder).
"""
from __future__ import annotations

import gzip
import io
import os
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from tests.conftest import ROOT
from tests.test_serve import CHROMIUM_ARGS, FEATURES, HOUSE, Server, draw, skip_unless_ci

CHROMIUM = "/usr/bin/chromium"
PHONE = {"width": 390, "height": 844}  # an iPhone 12-15's CSS viewport
DESKTOP = {"width": 1000, "height": 800}
PHOTO_INDEX = 1  # MNIST test image 1, a "2": a digit the drawing tests do not use
SCREENSHOT_LIMIT = 150_000  # bytes; the README's image must stay cheap to clone and load


# ---- browser and servers ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def sync_api():
    """Playwright's sync API, or a skip (a failure under CI=true) when it or Debian's Chromium is missing.

    Session-scoped so that it runs before the models are trained: no point training for a skip.
    """
    try:
        from playwright import sync_api
    except ImportError:
        skip_unless_ci("playwright is not installed (pip install playwright)")
    if not Path(CHROMIUM).exists():
        skip_unless_ci(f"Debian's chromium is not installed at {CHROMIUM}")
    return sync_api


@pytest.fixture(scope="module")
def browser(sync_api):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def start_server(models: Path, log: Path) -> Server:
    """``python -m serve`` on ``models``, once every model is ready."""
    return Server.ready([sys.executable, "-m", "serve", "--models", str(models), "--port", "{port}",
                         "--workers", "1"], log)


def models_folder(root: Path, bundles: dict[str, Path]) -> Path:
    root.mkdir()
    for name, bundle in bundles.items():
        shutil.copytree(bundle, root / name)
    return root


@pytest.fixture(scope="module")
def server(sync_api, mnist_bundle, housing_bundle, tmp_path_factory):
    """A development server with a digits model (mnist) and a house-price model (housing)."""
    tmp = tmp_path_factory.mktemp("page")
    models = models_folder(tmp / "models", {"mnist": mnist_bundle, "housing": housing_bundle})
    server = start_server(models, tmp / "server.log")
    yield server
    server.stop()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.goto(server.url + "/")
    yield page
    context.close()


# ---- what the tests see and do -----------------------------------------------------------------


def assert_preview_shown(page) -> str:
    """The 28x28 the model saw is on the page, decoded at its natural size; returns its data URL."""
    page.wait_for_function("document.getElementById('seen').complete && !document.getElementById('seen').hidden")
    image = page.locator("#seen").evaluate(
        "img => ({src: img.getAttribute('src') || '', width: img.naturalWidth, height: img.naturalHeight})")
    assert image["src"].startswith("data:image/png;base64,")
    assert (image["width"], image["height"]) == (28, 28)
    assert page.locator("#seen").is_visible()
    return image["src"]


def price_house(page) -> float:
    """Submit the house form as it stands; the price the page shows, in $1000s."""
    page.click("button[type=submit]")
    page.wait_for_function("document.getElementById('price').textContent !== ''", timeout=15000)
    return float(page.locator("#price").inner_text())


@pytest.fixture(scope="module")
def photo(data_dir, tmp_path_factory) -> tuple[Path, int]:
    """A phone-like photo of an MNIST test digit: dark ink on shaded, noisy paper, 480x640 JPEG."""
    with gzip.open(data_dir / "mnist" / "t10k-images-idx3-ubyte.gz") as f:
        digit = np.frombuffer(f.read()[16 + PHOTO_INDEX * 784:16 + (PHOTO_INDEX + 1) * 784], np.uint8).reshape(28, 28)
    with gzip.open(data_dir / "mnist" / "t10k-labels-idx1-ubyte.gz") as f:
        label = f.read()[8 + PHOTO_INDEX]
    rng = np.random.default_rng(0)
    paper = np.linspace(235, 200, 640, dtype=np.float32)[:, None] * np.ones((1, 480), np.float32)  # light falls off
    ink = np.zeros_like(paper)
    ink[170:450, 100:380] = cv2.resize(digit, (280, 280), interpolation=cv2.INTER_CUBIC).astype(np.float32) / 255
    image = paper - (paper - 45) * np.clip(ink, 0, 1) + rng.normal(0, 3, paper.shape)
    path = tmp_path_factory.mktemp("photo") / "digit.jpg"
    cv2.imwrite(str(path), np.clip(np.rint(image), 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 85])
    return path, label


# ---- tests --------------------------------------------------------------------------------------


def test_drawn_digit_shows_what_the_model_saw(page):
    assert not page.locator("#seen").is_visible()  # nothing seen before anything is drawn
    assert draw(page, [[(0.5, 0.15), (0.52, 0.85)]]) == "1"
    assert_preview_shown(page)
    assert page.locator("#bar-1 .fill").evaluate("e => parseFloat(e.style.width)") > 50
    page.click("#clear")
    assert page.locator("#digit").inner_text() == "?" and not page.locator("#seen").is_visible()


def test_uploaded_photo_is_recognised(page, photo):
    path, label = photo
    assert page.locator("#photo").get_attribute("accept") == "image/*"
    camera = page.locator("#camera")  # the phone's camera: same input, plus capture
    assert camera.get_attribute("accept") == "image/*" and camera.get_attribute("capture") is not None
    assert draw(page, [[(0.25, 0.2), (0.75, 0.2), (0.4, 0.85)]]) == "7"
    drawn = assert_preview_shown(page)
    before = int(page.locator("body").get_attribute("data-requests"))
    page.set_input_files("#photo", str(path))
    page.wait_for_function(f"Number(document.body.dataset.requests) > {before}", timeout=15000)
    assert page.locator("#status").inner_text() == ""
    assert page.locator("#digit").inner_text() == str(label)
    assert assert_preview_shown(page) != drawn
    # The pad shows the photo (grey paper), not the blank white of a cleared pad.
    assert page.locator("#pad").evaluate("c => c.getContext('2d').getImageData(140, 140, 1, 1).data[0]") < 250
    # A file that is no image: the server's reason, and no earlier answer left beside it.
    before = int(page.locator("body").get_attribute("data-requests"))
    page.set_input_files("#photo", {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not a photo"})
    page.wait_for_function(f"Number(document.body.dataset.requests) > {before}", timeout=15000)
    assert page.locator("#status").inner_text().startswith("could not decode image")
    assert page.locator("#digit").inner_text() == "?" and not page.locator("#seen").is_visible()


def test_house_form_prices_the_typical_house(page, server):
    for name, value in zip(FEATURES, HOUSE):  # prefilled with the first house of the data
        assert float(page.locator(f"[name={name}]").input_value()) == value
    expected = server.post("/predict/house", json=dict(zip(FEATURES, HOUSE))).json()
    assert expected["unit"] == "$1000s"
    assert price_house(page) == pytest.approx(expected["price"], abs=0.005)
    assert page.locator("#price-unit").inner_text() == "in $1000s"
    dollars = page.locator("#price-dollars").inner_text()
    assert dollars == f"${round(expected['price'] * 10) * 100:,}"
    page.fill("[name=RM]", "8")  # more rooms, a dearer house
    assert price_house(page) > expected["price"]


def test_page_fits_a_phone(browser, server, tmp_path):
    context = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    try:
        page = context.new_page()
        page.goto(server.url + "/")
        assert draw(page, [[(0.5, 0.15), (0.52, 0.85)]]) == "1"
        assert_preview_shown(page)
        assert price_house(page) > 0
        # No sideways scrolling, and every control shown within the screen's width.
        width = page.evaluate("[window.innerWidth, document.documentElement.scrollWidth]")
        assert width == [PHONE["width"], PHONE["width"]], width
        for selector in ("#pad", "#clear", "label[for=photo]", "label[for=camera]", "#seen", "#digit",
                         "[name=CRIM]", "[name=LSTAT]", "button[type=submit]", "#price-dollars"):
            box = page.locator(selector).bounding_box()
            assert page.locator(selector).is_visible() and box["x"] >= 0, selector
            assert box["x"] + box["width"] <= PHONE["width"], selector
        # The whole page in one picture. Not screenshot(full_page=True): Chromium drops the touch
        # emulation while it captures, so the picture would lack the camera button a phone shows.
        page.set_viewport_size({"width": PHONE["width"], "height": page.evaluate("document.body.scrollHeight")})
        assert page.locator("label[for=camera]").is_visible()
        page.screenshot(path=str(tmp_path / "phone.png"))
    finally:
        context.close()


def test_desktop_screenshot(page, tmp_path):
    """What the README shows: a drawn digit, what the model saw, a priced house."""
    assert draw(page, [[(0.3, 0.3), (0.5, 0.15), (0.68, 0.3), (0.3, 0.85), (0.72, 0.85)]]) == "2"
    assert_preview_shown(page)
    price_house(page)
    assert not page.locator("label[for=camera]").is_visible()  # a desktop has no camera button
    out = ROOT / "docs" / "page.png" if os.environ.get("UPDATE_SCREENSHOT") == "1" else tmp_path / "page.png"
    # 64 colours: the page is flat colours and text, so the picture looks the same at a third of the bytes.
    shot = Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("RGB")
    shot.quantize(64, Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(out, optimize=True)
    assert out.stat().st_size < SCREENSHOT_LIMIT


def test_page_says_politely_when_a_model_is_missing(browser, mnist_bundle, housing_bundle, tmp_path):
    """A server with one model only: the other half of the page says so instead of showing an error code."""
    digits_only = start_server(models_folder(tmp_path / "digits", {"mnist": mnist_bundle}), tmp_path / "digits.log")
    try:
        page = browser.new_page(viewport=DESKTOP)
        page.goto(digits_only.url + "/")
        page.click("button[type=submit]")
        page.wait_for_function("document.getElementById('house-status').textContent !== ''")
        assert page.locator("#house-status").inner_text() == \
            "Sorry, this server has no house-price model loaded, so it cannot answer here."
        page.close()
    finally:
        digits_only.stop()
    houses_only = start_server(models_folder(tmp_path / "houses", {"housing": housing_bundle}), tmp_path / "houses.log")
    try:
        page = browser.new_page(viewport=DESKTOP)
        page.goto(houses_only.url + "/")
        before = int(page.locator("body").get_attribute("data-requests"))
        box = page.locator("#pad").bounding_box()
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.wait_for_function(f"Number(document.body.dataset.requests) > {before}", timeout=15000)
        assert page.locator("#status").inner_text() == \
            "Sorry, this server has no digit model loaded, so it cannot answer here."
        assert page.locator("#digit").inner_text() == "?"
        page.close()
    finally:
        houses_only.stop()
