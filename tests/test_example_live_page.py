"""The example's live page in headless Chromium, served by uvicorn (ASGI): a question
edited in the admin changes on the open page, through the API's event stream, without
a reload."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.support.redis_server import free_port
from tests.test_admin_browser import PASSWORD, WAIT, browser, click_and_wait  # noqa: F401
from tests.test_admin_browser import pytestmark as browser_marks
from tests.test_example_project import example_copy, example_env, manage

pytestmark = browser_marks


@pytest.fixture(scope="module")
def asgi_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The example project under uvicorn (test mode: fakeredis in that process)."""
    workdir = example_copy(tmp_path_factory.mktemp("live"))
    manage(workdir, "migrate", "-v", "0")
    env = example_env(DJANGO_SUPERUSER_PASSWORD=PASSWORD)
    manage(workdir, "createsuperuser", "--noinput", "--username", "editor",
           "--email", "editor@example.com", env=env)  # fmt: skip
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "example_project.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
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
                assert process.poll() is None, "uvicorn stopped"
                assert time.monotonic() < deadline, "uvicorn did not answer"
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(WAIT)


def test_the_live_page_follows_the_admins_edits(asgi_server, browser):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    server = asgi_server
    driver.get(f"{server}/admin/login/")
    driver.find_element(By.NAME, "username").send_keys("editor")
    driver.find_element(By.NAME, "password").send_keys(PASSWORD)
    click_and_wait(driver, driver.find_element(By.CSS_SELECTOR, "input[type=submit]"))
    driver.get(f"{server}/admin/polls/question/add/")
    driver.find_element(By.NAME, "question_text").send_keys("Lunch at noon?")
    click_and_wait(driver, driver.find_element(By.NAME, "_continue"))
    admin_window = driver.current_window_handle
    edit_url = driver.current_url

    driver.switch_to.new_window("tab")
    live_window = driver.current_window_handle
    driver.get(f"{server}/live/")
    [item] = driver.find_elements(By.CSS_SELECTOR, "#questions li")
    assert item.text == "Lunch at noon?"
    WebDriverWait(driver, WAIT).until(lambda d: d.find_element(By.ID, "status").text == "live")
    driver.execute_script("window.notReloaded = true;")

    driver.switch_to.window(admin_window)
    driver.get(edit_url)
    text = driver.find_element(By.NAME, "question_text")
    text.clear()
    text.send_keys("Lunch at one?")
    click_and_wait(driver, driver.find_element(By.NAME, "_continue"))
    driver.get(f"{server}/admin/polls/question/add/")
    driver.find_element(By.NAME, "question_text").send_keys("Dinner at eight?")
    click_and_wait(driver, driver.find_element(By.NAME, "_save"))

    driver.switch_to.window(live_window)
    WebDriverWait(driver, WAIT).until(
        lambda d: (
            [li.text for li in d.find_elements(By.CSS_SELECTOR, "#questions li")]
            == ["Lunch at one?", "Dinner at eight?"]
        )
    )
    assert driver.execute_script("return window.notReloaded === true;")
