"""The admin's "Recent changes" pages in a real browser: headless Chromium (Debian's
``chromium`` and ``chromium-driver``, driven by selenium) against the example project,
served by ``runserver`` on a free port in test mode (its diffs live in that process).

A user logs in, adds a question with a choice, edits it, follows the change form's
"Recent changes" link, then the change list's. Screenshots of both pages are written to
the test's temporary directory, or, with ``DIFFS_UPDATE_SCREENSHOTS=1``, to
``example_project/docs/`` (the example's README shows them).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_example_project import EXAMPLE, example_copy, example_env, manage

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs Debian's chromium and chromium-driver (apt-get install; .ci/run does)",
)

#: How long a page or the server may take, in seconds.
WAIT = 30
PASSWORD = "browser-test-password"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The example project served by runserver; stopped by its pid."""
    workdir = example_copy(tmp_path_factory.mktemp("browser"))
    manage(workdir, "migrate", "-v", "0")
    env = example_env(DJANGO_SUPERUSER_PASSWORD=PASSWORD)
    manage(workdir, "createsuperuser", "--noinput", "--username", "editor",
           "--email", "editor@example.com", env=env)  # fmt: skip
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
        cwd=workdir,
        env=example_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + WAIT
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                assert process.poll() is None, "runserver stopped"
                assert time.monotonic() < deadline, "runserver did not answer"
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(WAIT)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=1280,900"):  # fmt: skip
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


def screenshots_dir(tmp_path: Path) -> Path:
    if os.environ.get("DIFFS_UPDATE_SCREENSHOTS") == "1":
        return EXAMPLE / "docs"
    return tmp_path


def click_and_wait(driver, element) -> None:
    """Click ``element`` and wait for the page it leads to: a find right after a click
    can otherwise still see the page being left."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    old_page = driver.find_element(By.TAG_NAME, "html")
    element.click()
    WebDriverWait(driver, WAIT).until(expected_conditions.staleness_of(old_page))


def test_recent_changes_pages_in_a_browser(server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    driver = browser
    driver.get(f"{server}/admin/login/")
    driver.find_element(By.NAME, "username").send_keys("editor")
    driver.find_element(By.NAME, "password").send_keys(PASSWORD)
    click_and_wait(driver, driver.find_element(By.CSS_SELECTOR, "input[type=submit]"))

    driver.get(f"{server}/admin/polls/question/add/")
    driver.find_element(By.NAME, "question_text").send_keys("Lunch at noon?")
    driver.find_element(By.NAME, "moderator_note").send_keys("a-secret-note")
    driver.find_element(By.NAME, "choices-0-choice_text").send_keys("Yes")
    click_and_wait(driver, driver.find_element(By.NAME, "_continue"))
    text = driver.find_element(By.NAME, "question_text")
    text.clear()
    text.send_keys("Lunch at one?")
    click_and_wait(driver, driver.find_element(By.NAME, "_continue"))

    click_and_wait(driver, driver.find_element(By.CSS_SELECTOR, "a.diffs-link"))
    assert "Recent changes: Lunch at one?" in driver.title
    rows = driver.find_elements(By.CSS_SELECTOR, "tr.diffs-row")
    kinds = [row.find_element(By.CSS_SELECTOR, ".diffs-kind").text for row in rows]
    assert kinds[0] == "updated" and kinds.count("created") == 2  # the question, its choice
    assert rows[0].find_element(By.CSS_SELECTOR, ".diffs-who").text == "editor"
    newest = rows[0].find_element(By.CSS_SELECTOR, ".diffs-fields").text
    assert "Lunch at noon? → Lunch at one?" in newest  # old values: Question has them
    # The moderator's note is masked: its change shows, its value never does.
    assert "moderator_note: [masked]" in rows[-1].text
    assert "a-secret-note" not in driver.page_source
    directory = screenshots_dir(tmp_path)
    directory.mkdir(exist_ok=True)
    assert driver.save_screenshot(str(directory / "admin_object_changes.png"))

    driver.get(f"{server}/admin/polls/question/")
    click_and_wait(driver, driver.find_element(By.CSS_SELECTOR, "a.diffs-link"))
    feed_rows = driver.find_elements(By.CSS_SELECTOR, "tr.diffs-row")
    assert len(feed_rows) == len(rows)
    objects = [row.find_element(By.CSS_SELECTOR, ".diffs-object").text for row in feed_rows]
    assert any(name.startswith("polls.question pk=") for name in objects)
    assert any(name.startswith("polls.choice pk=") for name in objects)
    assert driver.save_screenshot(str(directory / "admin_model_changes.png"))
