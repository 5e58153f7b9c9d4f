"""The review reports opened from disk in headless Chromium (Selenium + Debian's chromium and
chromium-driver): no console errors, one card per image, the tag filter works, item pages
open, Grad-CAM overlays load. Screenshots are kept in $TAGESTIMATE_ARTIFACTS (else pytest's
tmp folder; the path is printed) for a person to look at."""

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

import multiinference
import multitrain_efficientnet
from tagestimate.review import report

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1280,1000")


def start_chromium(tmp_path_factory, prefs=None):
    """A headless Chromium of its own (a fresh profile; `prefs`: e.g. the download folder), or a skip
    when Selenium, Chromium or chromedriver is missing. The caller quits it."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed "
                                    "(pip install -r requirements-dev.txt)")
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("Chromium or chromedriver not found (apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    if prefs:
        options.add_experimental_option("prefs", prefs)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    return driver


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver = start_chromium(tmp_path_factory)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    folder = os.environ.get("TAGESTIMATE_ARTIFACTS") or str(tmp_path_factory.mktemp("screenshots"))
    os.makedirs(folder, exist_ok=True)
    print(f"\nscreenshots in {folder}")
    return folder


def open_page(browser, path):
    browser.get("file://" + os.path.abspath(path))
    browser.get_log("browser")  # nothing from earlier pages


def console_errors(browser):
    return [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "ERROR")]


def spread_weights(folder, pixels):
    """A 64-px model whose outputs spread over (0, 1) on `pixels` (random init gives ~0.5)."""
    import keras

    from modelfiles import trained_config
    from tagestimate.labels import LABELS
    from tagestimate.model import build_model, write_config

    keras.utils.set_random_seed(7)
    model = build_model(len(LABELS), 64)
    features = keras.Model(model.input, model.get_layer("dense_1").output).predict(pixels, verbose=0)
    kernel = np.random.default_rng(1).normal(0, 1, (features.shape[1], len(LABELS))).astype(np.float32)
    kernel *= 2.0 / (features @ kernel).std()
    model.get_layer("dense_2").set_weights([kernel, -(features @ kernel).mean(axis=0)])
    os.makedirs(folder, exist_ok=True)
    model.save_weights(os.path.join(folder, "best.weights.h5"))
    write_config(folder, trained_config())
    return os.path.join(folder, "best.weights.h5")


@pytest.fixture(scope="module")
def tagged(tmp_path_factory):
    """multiinference --explain on two items of noise-and-colour images (one item hostile-named)."""
    from tagestimate.images import load_image

    root = tmp_path_factory.mktemp("run")
    paths = []
    for index in range(14):
        rng = np.random.default_rng(index)
        noise = rng.integers(0, 255, (70 + 3 * index, 90, 3), dtype=np.uint8) // (index % 5 + 1)
        folder = root / "in" / ("book<1>&'x" if index < 4 else "1054192")
        os.makedirs(folder, exist_ok=True)
        paths.append(str(folder / f"{index}_{index % 3}.jpg"))
        Image.fromarray((noise + rng.integers(0, 128, 3, dtype=np.uint8)).astype(np.uint8)).save(paths[-1])
    weights = spread_weights(str(root / "w"), np.stack([load_image(p, 64) for p in paths]).astype(np.float32))
    output = root / "out"
    assert multiinference.main(["--inputpath", str(root / "in"), "--outputpath", str(output), "--weights", weights,
                                "--backend", "tensorflow", "--explain", "--quiet"]) == 0
    return output, paths


def test_inference_report_in_chromium(browser, tagged, artifacts):
    output, paths = tagged
    open_page(browser, output / "index.html")
    assert browser.find_element("css selector", "h1").text.startswith("Tagging report")
    browser.save_screenshot(os.path.join(artifacts, "inference_index.png"))
    assert console_errors(browser) == []
    links = browser.find_elements("css selector", "a.item")
    assert sorted(link.text for link in links) == ["1054192", "book<1>&'x"]
    [link] = [link for link in links if link.text == "1054192"]
    link.click()
    assert browser.find_element("css selector", "h1").text == "1054192"
    cards = browser.find_elements("css selector", ".card")
    assert len(cards) == 10
    from selenium.webdriver.support.ui import WebDriverWait

    # every card's thumbnail loads (the "similar" thumbnails inside a closed <details> load when opened)
    thumbnails = "return Array.from(document.querySelectorAll('.card .pic img'))"
    assert browser.execute_script(thumbnails + ".length") == 10
    WebDriverWait(browser, 20).until(lambda driver: driver.execute_script(thumbnails + ".every(i => i.complete)"))
    assert browser.execute_script(thumbnails + ".every(i => i.naturalWidth > 0)")
    browser.save_screenshot(os.path.join(artifacts, "inference_item.png"))

    visible = "return document.querySelectorAll('.card:not(.hidden)').length"
    kept = json.loads((output / "1054192.json").read_text())
    counts = {}
    for tags in kept.values():
        for tag in tags:
            counts[tag["tag"]] = counts.get(tag["tag"], 0) + 1
    label = min(counts, key=counts.get)  # a tag some images have and others lack
    assert 0 < counts[label] < 10
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element("id", "tag")).select_by_value(label)
    assert browser.execute_script(visible) == counts[label]
    assert browser.find_element("id", "count").text == f"{counts[label]} of 10 images shown"
    browser.save_screenshot(os.path.join(artifacts, "inference_item_filtered.png"))
    browser.find_element("id", "lo").clear()
    browser.find_element("id", "lo").send_keys("1")
    assert browser.execute_script(visible) == 0  # nothing above confidence 1
    Select(browser.find_element("id", "tag")).select_by_value("")
    browser.find_element("id", "lo").clear()
    browser.find_element("id", "lo").send_keys("0")

    notes = "return Array.from(document.querySelectorAll('.card .camnote')).map(n => n.textContent)"
    assert set(browser.execute_script(notes)) == {""}  # no overlay shown, none named
    browser.find_element("id", "cams").click()  # every card shows its first tag's Grad-CAM overlay
    overlays = "return Array.from(document.querySelectorAll('.card img')).filter(i => i.src.includes('/cam/'))"
    WebDriverWait(browser, 20).until(lambda driver: driver.execute_script(overlays + ".every(i => i.complete)"))
    overlays = browser.execute_script(overlays + ".map(i => i.naturalWidth)")
    tagged_images = sum(1 for tags in kept.values() if tags)
    assert len(overlays) == tagged_images > 0 and all(width > 0 for width in overlays)
    # each card says whose map it shows (its first tag's), and when that map is flat
    firsts = browser.execute_script("return Array.from(document.querySelectorAll('.card')).map(c => "
                                    "{var t = c.querySelector('.tag.cam'); return t ? [t.dataset.tag, !!t.dataset.flat] : null})")
    assert browser.execute_script(notes) == [
        "" if not first else f"Grad-CAM of {first[0]}" + (": flat map, no region stands out" if first[1] else "")
        for first in firsts]
    assert sum(1 for first in firsts if first) == tagged_images
    browser.save_screenshot(os.path.join(artifacts, "inference_item_gradcam.png"))
    assert console_errors(browser) == []


@pytest.mark.parametrize("names", [("1054192",), ("1054192", "R100000039-I000012345-" + "x" * 60)])
def test_items_table_fits_a_1400_px_window(browser, tmp_path, names):
    """Every label a column, four-digit counts, with or without a long item name: still no horizontal
    scrolling, and a short name is not broken inside."""
    from test_report import image, tag_output, trained_config

    config = trained_config()
    output = tmp_path / "out"
    path = image(tmp_path / "in" / "k.jpg")
    for name in names:
        tag_output(output, name, [(f"k{n}", path, [0.9] * len(config.labels)) for n in range(1000)], config)
    report.build_report(str(output), progress=False)
    browser.set_window_size(1400, 1000)
    try:
        open_page(browser, output / "index.html")
        width = browser.execute_script("return window.innerWidth")
        assert width <= 1400
        assert browser.execute_script("return document.getElementById('items').getBoundingClientRect().right") <= width
        assert browser.execute_script("return document.documentElement.scrollWidth") <= width
        # A short name (an NDL book id) stays on one line: the column is not squeezed to break inside it.
        lines = browser.execute_script(
            "const a = [...document.querySelectorAll('#items a.item')].find(e => e.textContent === '1054192');"
            "return a.getClientRects().length")
        assert lines == 1
    finally:
        browser.set_window_size(1280, 1000)


def test_hostile_item_page_opens_and_runs_no_injected_code(browser, tagged):
    output, _ = tagged
    open_page(browser, output / "index.html")
    [link] = [link for link in browser.find_elements("css selector", "a.item") if link.text == "book<1>&'x"]
    link.click()
    assert browser.find_element("css selector", "h1").text == "book<1>&'x"
    assert len(browser.find_elements("css selector", ".card")) == 4
    assert console_errors(browser) == []


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A real 2-epoch 64-px training run: the trainer writes report.html at its end."""
    from test_training import FAST, make_folders

    root = tmp_path_factory.mktemp("trained")
    data, out = make_folders(str(root / "data"), corrupt=False), str(root / "out")
    assert multitrain_efficientnet.main(["--data", data, "--out", out, "--epochs", "2", *FAST]) == 0
    return out


def test_training_report_in_chromium(browser, trained, artifacts):
    page = os.path.join(trained, "report.html")
    assert os.path.exists(page)
    open_page(browser, page)
    for plot in ("history", "pr", "confusion"):
        image = browser.find_element("id", plot)
        assert browser.execute_script("return arguments[0].naturalWidth", image) > 300
    rows = browser.find_elements("css selector", "#labels tr")
    assert len(rows) == 1 + 11
    cams = browser.find_elements("css selector", ".case img.cam")
    assert cams and all(browser.execute_script("return arguments[0].naturalWidth", cam) > 0 for cam in cams)
    browser.save_screenshot(os.path.join(artifacts, "training_report.png"))
    browser.execute_script("window.scrollTo(0, document.body.scrollHeight * 0.55)")
    browser.save_screenshot(os.path.join(artifacts, "training_report_lower.png"))
    assert console_errors(browser) == []


def test_rebuilding_the_training_report_from_the_run_folder(trained, capsys):
    os.remove(os.path.join(trained, "report.html"))
    assert report.main([trained, "--no-explain", "--quiet"]) == 0
    assert "report written" in capsys.readouterr().out
    assert "Per label" in open(os.path.join(trained, "report.html"), encoding="utf-8").read()


def test_hostile_labels_show_as_text_and_run_nothing(browser, tmp_path, artifacts):
    """A model.json whose labels are HTML, quotes, '&' and Hebrew, and an output file with such a key:
    the pages show them as text, no injected element or alert, and the index's links select them."""
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.support.ui import Select

    from test_report import HOSTILE_LABELS, image, tag_output, trained_config

    labels = list(HOSTILE_LABELS)
    config = trained_config(labels=tuple(labels))
    output = tmp_path / "out"
    key = "k'\"<img src=x onerror=alert(3)>&"
    rows = [(key, image(tmp_path / "in" / "h" / "k.jpg"), list(HOSTILE_LABELS.values())),
            ("other", image(tmp_path / "in" / "h" / "o.jpg", (10, 200, 10)), [0.05, 0.95, 0.05, 0.05, 0.05])]
    item = "<b onmouseover=alert(4)>h&'"  # a folder name: no slash
    tag_output(output, item, rows, config)
    report.write_run_info(str(output), str(tmp_path / "w.h5"), "keras-weights", "openvino", config, False)
    report.build_report(str(output), progress=False)
    open_page(browser, output / "index.html")
    headers = [cell.text for cell in browser.find_elements("css selector", "#items th.label")]
    assert headers == labels
    assert browser.find_elements("css selector", "script, b, i") == []
    # the "a&b c" cell: its link's #tag= selects exactly that label on the item page
    column = labels.index("a&b c")
    browser.find_elements("css selector", "#items tr")[1].find_elements("css selector", "td")[3 + column] \
        .find_element("css selector", "a").click()
    assert browser.find_element("css selector", "h1").text == item
    assert Select(browser.find_element("id", "tag")).first_selected_option.text == "a&b c"
    assert browser.find_element("id", "count").text == "1 of 2 images shown"
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text
    assert browser.find_elements("css selector", "b, i, img[src=x]") == []
    assert len(browser.find_elements("css selector", "script")) == 4  # item.js, explore.js, review.js, the labels: none injected
    options = [option.text for option in Select(browser.find_element("id", "tag")).options]
    assert options == ["any", *labels, "no tag"]
    card = browser.find_elements("css selector", ".card")[0]
    assert card.find_element("css selector", ".key").text == key
    chips = [chip.text for chip in card.find_elements("css selector", ".tag")]
    assert chips == [f"{label} {value:.3f}" for label, value in list(HOSTILE_LABELS.items())[:4]] + ["x=1&y z 0.350 \u25be"]
    Select(browser.find_element("id", "tag")).select_by_visible_text("<script>alert(1)</script>")
    assert browser.find_element("id", "count").text == "1 of 2 images shown"
    browser.save_screenshot(os.path.join(artifacts, "inference_hostile_labels.png"))
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text
    assert console_errors(browser) == []
