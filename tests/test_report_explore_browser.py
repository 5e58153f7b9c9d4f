"""The report's map, tag pages and similar links opened from disk in headless Chromium (the fixtures
of test_report_browser.py): no console error, the map's point count, a thumbnail on hover, a click
and a similar link that open the right card, tag pages in order of confidence, and the map's draw
time at 100k points. Screenshots go where test_report_browser.py puts them."""

import os
import time

import numpy as np
import pytest

from test_report_browser import artifacts, browser, console_errors, open_page  # noqa: F401 (fixtures)
from test_report_explore import collection  # noqa: F401 (fixture)
from tagestimate.review import explore, explore_pages, layout, report

pytestmark = pytest.mark.slow


def wait(browser, script, timeout=20):
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, timeout).until(lambda driver: driver.execute_script(script))


def target_card(browser):
    """(item page's h1, key) of the card the URL's #anchor points at, and whether it is on screen."""
    return browser.execute_script(
        "var c = document.querySelector(':target'); if (!c) return null; var r = c.getBoundingClientRect();"
        "return [document.querySelector('h1').textContent, c.querySelector('.key').textContent,"
        " r.top >= 0 && r.bottom <= window.innerHeight]")


def isolated_point(browser):
    """The index of the point farthest from any other on screen (so the mouse finds it and no other)."""
    return browser.execute_script(
        "var n = mapView.count, best = -1, far = -1; for (var i = 0; i < n; i++) { var a = mapView.screenOf(i), d = 1e9;"
        " for (var j = 0; j < n; j++) if (j !== i) { var b = mapView.screenOf(j);"
        " d = Math.min(d, Math.hypot(a[0] - b[0], a[1] - b[1])); } if (d > far) { far = d; best = i; } } return best;")


def point_at(browser, index):
    """Move the mouse over point `index` of the map; returns the canvas element."""
    from selenium.webdriver import ActionChains

    canvas = browser.find_element("id", "map")
    x, y = browser.execute_script("return mapView.screenOf(arguments[0])", index)
    width, height = browser.execute_script("var r = arguments[0].getBoundingClientRect(); return [r.width, r.height]",
                                           canvas)
    ActionChains(browser).move_to_element_with_offset(canvas, int(round(x - width / 2)), int(round(y - height / 2))) \
        .perform()
    return canvas


def test_map_reports_every_image_shows_a_thumbnail_on_hover_and_a_click_opens_its_card(browser, collection, artifacts):
    output, vectors, _ = collection
    report.build_report(str(output), progress=False)
    open_page(browser, output / "index.html")
    browser.find_element("id", "maplink").click()
    assert browser.find_element("css selector", "h1").text == "Map of the collection"
    assert browser.find_element("id", "points").text == str(len(vectors)) == "7"
    assert browser.execute_script("return mapView.count") == 7
    legend = browser.find_element("id", "legend").text
    assert "graphic_map (5)" in legend and "picture (1)" in legend and "no tag (1)" in legend
    index = isolated_point(browser)
    item, key = browser.execute_script("var D = JSON.parse(document.getElementById('mapdata').textContent);"
                                       "return [D.items[D.i[arguments[0]]][0], D.k[arguments[0]]]", index)
    assert (item, key) in vectors
    canvas = point_at(browser, index)
    tip = browser.find_element("id", "tip")
    assert tip.is_displayed() and tip.text.startswith(f"{item} / {key}")
    thumb = browser.find_element("id", "tipimg")
    wait(browser, "return document.getElementById('tipimg').complete")
    assert thumb.get_attribute("src").endswith(f"thumbs/{explore.safe_name(item)}/{explore.safe_name(key)}.jpg")
    assert browser.execute_script("return document.getElementById('tipimg').naturalWidth") > 0
    browser.save_screenshot(os.path.join(artifacts, "explore_map_hover.png"))
    assert console_errors(browser) == []
    # a drag pans the map: every point moves by the drag
    from selenium.webdriver import ActionChains

    before = browser.execute_script("return mapView.screenOf(arguments[0])", index)
    ActionChains(browser).move_to_element_with_offset(canvas, 5, 5).click_and_hold().move_by_offset(60, 40) \
        .release().perform()
    after = browser.execute_script("return mapView.screenOf(arguments[0])", index)
    assert abs(after[0] - before[0] - 60) < 2 and abs(after[1] - before[1] - 40) < 2
    point_at(browser, index)
    ActionChains(browser).click().perform()  # where the mouse is: on the point
    wait(browser, "return document.querySelector(':target') !== null")
    assert browser.current_url.endswith(f"{report.page_names(item, 1)[0]}#{explore.anchor(key)}")
    assert target_card(browser) == [item, key, True]
    assert console_errors(browser) == []


def test_similar_link_opens_the_neighbours_card(browser, collection, artifacts):
    output, _, _ = collection
    report.build_report(str(output), progress=False)
    open_page(browser, output / "html" / report.page_names("a", 1)[0])
    card = browser.find_element("id", explore.anchor("k1"))
    card.find_element("css selector", ".similar summary").click()
    links = card.find_elements("css selector", ".similar a.sim")
    assert len(links) == 5
    wait(browser, "return Array.from(document.querySelectorAll('#%s .similar img')).every(i => i.complete)"
         % explore.anchor("k1"))
    assert browser.execute_script("return Array.from(document.querySelectorAll('#%s .similar img'))"
                                  ".every(i => i.naturalWidth > 0)" % explore.anchor("k1"))
    browser.save_screenshot(os.path.join(artifacts, "explore_similar.png"))
    assert links[0].get_attribute("title").startswith("b / k1: similarity")
    links[0].click()  # a/k1's nearest: b/k1 (a/k1's vector plus a little of a/k2's)
    wait(browser, "return document.querySelector(':target') !== null")
    assert target_card(browser) == ["b", "k1", True]
    assert console_errors(browser) == []


def test_tag_page_in_chromium_is_ordered_by_confidence_and_opens_cards(browser, collection, artifacts):
    output, _, confidences = collection
    index = report.build_report(str(output), progress=False)
    open_page(browser, index)
    [row] = [row for row in browser.find_elements("css selector", "#tags tr")[1:]
             if row.find_element("css selector", "td").text == "graphic_map"]
    row.find_element("css selector", "a.tagpage").click()
    assert browser.find_element("css selector", "h1").text == "All images tagged graphic_map"
    values = browser.execute_script("return Array.from(document.querySelectorAll('.tagcard')).map(c => +c.dataset.c)")
    assert values == sorted((value for value in confidences.values() if value > 0.4), reverse=True)
    assert len(set(values)) == len(values) == 6
    browser.save_screenshot(os.path.join(artifacts, "explore_tag_page.png"))
    browser.find_elements("css selector", ".tagcard .pic a")[1].click()  # the second: b/k0 at 0.88
    wait(browser, "return document.querySelector(':target') !== null")
    assert target_card(browser) == ["b", "k0", True]
    assert console_errors(browser) == []


def big_map(folder, count, total):
    """map.html with `count` points of `total` images (all in one item), random positions."""
    rng = np.random.default_rng(0)
    collection = explore.Collection(report.PAGE_SIZE)
    collection.items = ["big"]
    collection.owner = [0] * total
    collection.keys = [f"k{n}" for n in range(total)]
    collection.position = list(range(total))
    collection.shown = layout.sample(total, count)
    collection.points = rng.random((count, 2)).astype(np.float32)
    tops = [("graphic_map", "picture", "stamp", None)[n % 4] for n in range(total)]
    text = explore_pages.map_page(collection, ["graphic_map", "picture", "stamp"], tops, explore.safe_name,
                                  lambda item, key: False)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "map.html")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


def test_map_draws_100k_points_smoothly_and_says_when_it_shows_a_sample(browser, tmp_path, artifacts):
    path = big_map(str(tmp_path / "html"), 100_000, 150_000)
    started = time.perf_counter()
    open_page(browser, path)
    wait(browser, "return window.mapView !== undefined", timeout=60)
    print(f"\n100k-point map: {os.path.getsize(path) / 1e6:.1f} MB, opened in {time.perf_counter() - started:.1f} s")
    assert browser.execute_script("return mapView.count") == 100_000
    assert browser.find_element("id", "points").text == "100,000"
    assert "A random sample of 100,000 of the 150,000 images" in browser.find_element("id", "summary").text
    browser.execute_script("mapStats.draws = 0; mapStats.totalMs = 0; mapStats.maxMs = 0;"
                           "for (var i = 0; i < 10; i++) { mapView.zoom(1.25, 600, 400); mapView.pan(13, -7); }")
    stats = browser.execute_script("return mapStats")
    mean = stats["totalMs"] / stats["draws"]
    print(f"100k-point map: {stats['draws']} draws, {mean:.1f} ms mean, {stats['maxMs']:.1f} ms worst")
    assert stats["draws"] == 20 and mean < 60  # smooth: far under a tenth of a second per frame, even here
    browser.save_screenshot(os.path.join(artifacts, "explore_map_100k.png"))
    assert console_errors(browser) == []


def test_a_similar_link_scrolls_its_card_clear_of_the_sticky_filters(browser, tmp_path):
    """On a long item page the target card is brought into the window below the filters (a plain
    anchor jump would leave it under them, at the top)."""
    from test_report import image, probabilities, tag_output, trained_config
    from test_report_explore import embed

    config = trained_config()
    output = tmp_path / "out"
    rng = np.random.default_rng(9)
    keys = [f"p{n}" for n in range(90)]
    vectors = {key: rng.normal(size=32) for key in keys}
    path = image(tmp_path / "in" / "x.jpg")
    tag_output(output, "long", [(key, path, probabilities(picture=0.9)) for key in keys], config)
    embed(output, "long", vectors)
    tag_output(output, "one", [("q", path, probabilities(stamp=0.9))], config)
    embed(output, "one", {"q": vectors["p40"] + 0.01 * rng.normal(size=32)})  # its nearest: long/p40
    report.write_run_info(str(output), str(tmp_path / "w.h5"), "keras-weights", "openvino", config, False)
    report.build_report(str(output), progress=False)
    open_page(browser, output / "html" / report.page_names("one", 1)[0])
    browser.find_element("css selector", ".similar summary").click()
    browser.find_element("css selector", ".similar a.sim").click()
    wait(browser, "return document.querySelector(':target') !== null")
    assert target_card(browser) == ["long", "p40", True]
    top, below = browser.execute_script(
        "return [document.querySelector(':target').getBoundingClientRect().top,"
        " document.querySelector('.controls').getBoundingClientRect().bottom]")
    assert top >= below
    assert console_errors(browser) == []
