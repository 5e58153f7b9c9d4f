"""Reviewing tags in headless Chromium (review.js on the inference report's item pages): decide by
mouse and by keyboard on two pages, reload, the decisions are still shown, export corrections.csv
and read it back with corrections.read(): exactly what was decided, each image with its own tag and
decision. Hostile labels and paths stay text; the browser logs no error."""

import datetime
import os
import time

import pytest
from test_report import HOSTILE_LABELS, image, tag_output, trained_config
from test_report_browser import artifacts, console_errors, start_chromium  # noqa: F401 (fixture)

from tagestimate import corrections
from tagestimate.review import report

pytestmark = pytest.mark.slow

L0, L1, L2, L3, L4 = HOSTILE_LABELS  # "<script>…", quotes, "a&b c", Hebrew, "x=1&y z"
ITEM_A, ITEM_B = "a", "<b onmouseover=alert(4)>h&'"
FOLDER = "in, \"q\" & <i>\nx"  # comma, quotes, '&', HTML and a line break in the images' folder


@pytest.fixture(scope="module")
def downloads(tmp_path_factory):
    return str(tmp_path_factory.mktemp("downloads"))


@pytest.fixture(scope="module")
def browser(tmp_path_factory, downloads):
    driver = start_chromium(tmp_path_factory, {"download.default_directory": downloads,
                                               "download.prompt_for_download": False,
                                               "download.directory_upgrade": True})
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def output(tmp_path_factory):
    """Two items tagged with hostile labels; image paths: {name: absolute path}."""
    root = tmp_path_factory.mktemp("review")
    config = trained_config(labels=tuple(HOSTILE_LABELS))
    folder = root / FOLDER
    paths = {name: image(folder / file, color) for name, file, color in (
        ("i1", "a,1.jpg", (200, 30, 30)), ("i2", "b\"2.jpg", (30, 200, 30)), ("i3", "c 3.jpg", (30, 30, 200)),
        ("i4", "d\n4.jpg", (200, 200, 30)))}
    tag_output(root / "out", ITEM_A, [("i1", paths["i1"], [0.91, 0.82, 0.05, 0.05, 0.35]),  # L0 L1, L4 below
                                      ("i2", paths["i2"], [0.05, 0.95, 0.73, 0.05, 0.05]),  # L1 L2
                                      ("i3", paths["i3"], [0.05] * 5)], config)             # no tag
    tag_output(root / "out", ITEM_B, [("i4", paths["i4"], [0.05, 0.05, 0.05, 0.64, 0.05])], config)  # L3
    report.write_run_info(str(root / "out"), str(root / "w.h5"), "keras-weights", "openvino", config, False)
    report.build_report(str(root / "out"), progress=False)
    return root / "out", paths


def page_of(output, item):
    return "file://" + os.path.join(output, "html", report.page_names(item, 1)[0])


def card(browser, image_path):
    return browser.execute_script("return Array.from(document.querySelectorAll('.review-card'))"
                                  ".find(c => c.dataset.reviewImage === arguments[0])", image_path)


def chip(browser, image_path, tag):
    """The tag's element on the image's card: shown (data-review-tag) or added (data-review-added)."""
    return browser.execute_script(
        "return Array.from(arguments[0].querySelectorAll('[data-review-tag],[data-review-added]'))"
        ".find(e => (e.getAttribute('data-review-tag') ?? e.getAttribute('data-review-added')) === arguments[1])",
        card(browser, image_path), tag)


def state(browser, image_path):
    """{tag: 'confirm' | 'reject' | 'add' | ''} as the image's card shows it."""
    return browser.execute_script(
        "var out = {}; arguments[0].querySelectorAll('[data-review-tag]').forEach(e => "
        "out[e.getAttribute('data-review-tag')] = e.classList.contains('review-confirm') ? 'confirm' : "
        "e.classList.contains('review-reject') ? 'reject' : '');"
        "arguments[0].querySelectorAll('[data-review-added]').forEach(e => "
        "out[e.getAttribute('data-review-added')] = 'add');"
        "return out", card(browser, image_path))


def keys(browser, text):
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(browser).send_keys(text).perform()


def button(browser, image_path, tag, which):
    """The confirm (review-yes) or reject (review-no) button right after a tag."""
    return browser.execute_script("return arguments[0].nextElementSibling.querySelector(arguments[1])",
                                  chip(browser, image_path, tag), "." + which)


def focused(browser):
    return browser.execute_script("var e = document.activeElement; return e.getAttribute('data-review-tag') ?? "
                                  "e.getAttribute('data-review-added')")


def export(browser, downloads):
    for name in os.listdir(downloads):
        os.remove(os.path.join(downloads, name))
    browser.find_element("id", "review-export").click()
    path = os.path.join(downloads, "corrections.csv")
    for _ in range(100):
        if os.path.exists(path) and not any(name.endswith(".crdownload") for name in os.listdir(downloads)):
            return path
        time.sleep(0.1)
    raise AssertionError(f"no corrections.csv in {downloads}: {os.listdir(downloads)}")


def no_injection(browser):
    from selenium.common.exceptions import NoAlertPresentException

    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text
    assert browser.find_elements("css selector", "b, i, img[src=x]") == []
    assert len(browser.find_elements("css selector", "script")) == 4  # item.js, review.js, the labels


def test_decide_reload_export(browser, output, downloads, artifacts):
    output, paths = output
    i1, i2, i3, i4 = (paths[name] for name in ("i1", "i2", "i3", "i4"))
    browser.get(page_of(output, ITEM_A))
    assert console_errors(browser) == []
    assert browser.find_element("id", "review-export").get_attribute("disabled") == "true"  # nothing decided yet
    browser.find_element("id", "review-reviewer").send_keys('Ada, "L"')
    keys(browser, "ja")  # typed into the name field: no decision
    assert browser.find_element("id", "review-reviewer").get_attribute("value") == 'Ada, "L"ja'
    assert state(browser, i1) == {L0: "", L1: ""}
    keys(browser, "\b\b\ue00c")  # two backspaces, then Escape leaves the field: the keys review again
    keys(browser, "j")
    assert focused(browser) == L0

    # by mouse: confirm L0 on i1, reject L2 on i2, add L4 to i3 from the picker
    button(browser, i1, L0, "review-yes").click()
    button(browser, i2, L2, "review-no").click()
    card(browser, i3).find_element("css selector", ".review-addbtn").click()
    box = card(browser, i3).find_element("css selector", ".review-picker input")
    offered = card(browser, i3).find_elements("css selector", ".review-picker li")
    assert [li.text for li in offered] == [L0, L1, L2, L3, L4]
    box.send_keys("x=1")
    assert [li.text for li in card(browser, i3).find_elements("css selector", ".review-picker li")] == [L4]
    box.send_keys("\n")
    assert state(browser, i1) == {L0: "confirm", L1: ""}
    assert state(browser, i2) == {L1: "", L2: "reject"}
    assert state(browser, i3) == {L4: "add"}
    assert chip(browser, i3, L4).text == L4 and focused(browser) == L4
    # by keyboard: back to i2 (its first tag), next tag, confirm (replaces the reject); i1's second tag, reject
    keys(browser, "k")
    assert focused(browser) == L1 and "review-current" in card(browser, i2).get_attribute("class")
    keys(browser, "ly")
    keys(browser, "kln")
    assert state(browser, i1) == {L0: "confirm", L1: "reject"}, "after the keys"
    assert state(browser, i2) == {L1: "", L2: "confirm"}, "after the keys"
    # a second click on a pressed button undoes it; the key u too
    button(browser, i2, L1, "review-yes").click()
    assert state(browser, i2)[L1] == "confirm"
    button(browser, i2, L1, "review-yes").click()
    assert state(browser, i2)[L1] == ""
    keys(browser, "a")  # i2's L1 has the focus: confirm, then undo it
    assert state(browser, i2)[L1] == "confirm"
    keys(browser, "hu")
    assert state(browser, i2)[L1] == ""
    browser.save_screenshot(os.path.join(artifacts, "review_decided.png"))

    # Chromium hands localStorage writes from the page's process to the browser's asynchronously;
    # a person does not reload within milliseconds of a decision, so neither does the test
    time.sleep(0.5)
    browser.refresh()  # decisions survive a reload
    assert state(browser, i1) == {L0: "confirm", L1: "reject"}, "after the reload"
    assert state(browser, i2) == {L1: "", L2: "confirm"}, "after the reload"
    assert state(browser, i3) == {L4: "add"}, "after the reload"
    assert chip(browser, i3, L4).text == L4
    assert browser.find_element("id", "review-counts").text == (
        "this page: 2 confirmed \u00b7 1 rejected \u00b7 1 added (4 decisions in this report)")
    assert browser.find_element("id", "review-reviewer").get_attribute("value") == 'Ada, "L"'
    no_injection(browser)
    assert console_errors(browser) == []

    # the other item's page: add L0 ("<script>…") by keyboard, reject L3; the export holds both pages
    browser.get(page_of(output, ITEM_B))
    keys(browser, "j")
    assert focused(browser) == L3
    keys(browser, "+")
    keys(browser, "scr\n")
    assert state(browser, i4) == {L3: "", L0: "add"}
    assert chip(browser, i4, L0).text == L0 and focused(browser) == L0
    keys(browser, "hr")
    assert state(browser, i4) == {L3: "reject", L0: "add"}
    assert browser.find_element("id", "review-counts").text == (
        "this page: 0 confirmed \u00b7 1 rejected \u00b7 1 added (6 decisions in this report)")
    no_injection(browser)
    browser.save_screenshot(os.path.join(artifacts, "review_other_page.png"))
    started = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=10)
    rows, problems = corrections.read(export(browser, downloads))
    assert problems == []
    assert sorted(row[:5] for _, row in rows) == sorted([
        (i1, ITEM_A, L0, "confirm", 'Ada, "L"'), (i1, ITEM_A, L1, "reject", 'Ada, "L"'),
        (i2, ITEM_A, L2, "confirm", 'Ada, "L"'), (i3, ITEM_A, L4, "add", 'Ada, "L"'),
        (i4, ITEM_B, L0, "add", 'Ada, "L"'), (i4, ITEM_B, L3, "reject", 'Ada, "L"')])
    for _, row in rows:
        assert row.time.endswith("Z")
        assert started < datetime.datetime.fromisoformat(row.time.replace("Z", "+00:00")) <= (
            datetime.datetime.now(datetime.timezone.utc))
    assert corrections.contradictions(rows) == {}
    assert console_errors(browser) == []

    # another report (the same pages in another folder) keeps its own decisions: none yet
    import shutil

    other = output.parent / "other"
    shutil.copytree(output, other)
    browser.get(page_of(other, ITEM_A))
    assert state(browser, i1) == {L0: "", L1: ""} and state(browser, i3) == {}
    assert browser.find_element("id", "review-export").get_attribute("disabled") == "true"
    browser.get(page_of(output, ITEM_B))

    # Clear forgets every decision of the report (after a confirmation), on every page
    browser.find_element("id", "review-clear").click()
    browser.switch_to.alert.accept()
    assert state(browser, i4) == {L3: ""}
    assert browser.find_element("id", "review-export").get_attribute("disabled") == "true"
    browser.get(page_of(output, ITEM_A))
    assert state(browser, i1) == {L0: "", L1: ""} and state(browser, i3) == {}
    assert console_errors(browser) == []


def test_a_decision_the_storage_refuses_is_said_and_still_exported(browser, output, downloads):
    output, paths = output
    browser.get(page_of(output, ITEM_B))
    browser.execute_script("localStorage.clear()")
    browser.refresh()
    browser.execute_script("Storage.prototype.setItem = "
                           "function () { throw new DOMException('full', 'QuotaExceededError') }")
    button(browser, paths["i4"], L3, "review-yes").click()
    assert state(browser, paths["i4"]) == {L3: "confirm"}
    assert browser.find_element("id", "review-status").text == (
        "could not save (QuotaExceededError): export now, this page forgets it on reload")
    rows, problems = corrections.read(export(browser, downloads))
    assert problems == [] and [row[:5] for _, row in rows] == [(paths["i4"], ITEM_B, L3, "confirm", "")]
    assert console_errors(browser) == []
    browser.refresh()
    assert state(browser, paths["i4"]) == {L3: ""}
