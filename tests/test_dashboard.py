"""The dashboard in headless Chromium (Debian's chromium + chromium-driver, driven by Selenium):
real tickerplant, RDB, HDB, risk engine and `pretrade api`; a short flash-crash feed. The page
must show a tier change arrive live, and its kill switch must halt the instrument in the engine
and leave an audit entry; a risk officer's "wrong" on a tier alert is stored as a mark. Takes a
screenshot; with PRETRADE_UPDATE_SCREENSHOT=1 it replaces docs/img/dashboard.png (the docs' picture)."""

from __future__ import annotations

import os
import shutil
import time

import httpx
import pytest

from conftest import free_port
from conftest import start_pretrade as start
from conftest import stop_process as stop
from test_api import OFFICER, ROOT, Stack

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SYMS = ["ESZ6", "NQZ6"]
FLASH = ["--scenario", "flash-crash", "--seed", "3", "--syms", *SYMS, "--duration", "420",
         "-p", "at=330", "-p", "sym=ESZ6"]

def js(driver, css: str, what: str = "text"):
    """An element's text (or data-tier) read in one script: the grid is redrawn as updates arrive,
    so an element handle would go stale between finding and reading it."""
    return driver.execute_script(
        "const e = document.querySelector(arguments[0]);"
        "return e ? (arguments[1] === 'tier' ? e.dataset.tier : e.textContent) : null;", css, what)


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)),
                       reason="headless browser test needs Debian's chromium and chromium-driver: "
                              "apt-get update && apt-get install -y chromium chromium-driver"),
]


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1600,1250", f"--user-data-dir={tmp_path / 'chromium'}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    yield driver
    driver.quit()
    shutil.rmtree(tmp_path / "chromium", ignore_errors=True)


@pytest.fixture
def stack(tmp_path):
    s = Stack(tmp_path, FLASH, rte_args=("--labels-file", str(tmp_path / "marks.jsonl")))
    api_port = free_port()
    p = s.ports
    try:
        s.procs.append(start(["api", "--port", str(api_port), "--tp", f"localhost:{p['tp']}",
                              "--rdb", f"localhost:{p['rdb']}", "--hdb", f"localhost:{p['hdb']}",
                              "--rte", f"localhost:{p['rte']}", "--gw", f"localhost:{free_port()}",
                              "--audit", str(tmp_path / "audit.jsonl"), "--labels", str(tmp_path / "marks.jsonl")],
                             tmp_path / "api.log", api_port))
    except Exception:
        s.close()
        raise
    s.api = f"http://127.0.0.1:{api_port}"
    yield s
    s.close()


def test_dashboard_shows_a_tier_change_live_and_the_kill_switch_halts(stack, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(stack.api + "/")
    browser.find_element(By.ID, "token").send_keys("demo-risk-token")
    browser.find_element(By.ID, "btn-login").click()
    wait = WebDriverWait(browser, 30)
    wait.until(ec.text_to_be_present_in_element((By.ID, "whoami"), "risk1 (risk_officer)"))
    wait.until(ec.text_to_be_present_in_element((By.ID, "feed-status"), "live"))
    assert browser.find_element(By.ID, "btn-kill").is_enabled()

    feed = stack.feed(wait=False)                 # the market plays now: rows arrive over the stream
    try:
        row = 'tr[data-sym="ESZ6"]'
        WebDriverWait(browser, 60).until(lambda d: js(d, row, "tier"))
        assert js(browser, row, "tier") == "NORMAL"
        WebDriverWait(browser, 150, poll_frequency=0.2).until(lambda d: js(d, row, "tier") not in (None, "NORMAL"))
        raised = js(browser, row, "tier")
        assert raised in ("ELEVATED", "HIGH_ALERT", "CRITICAL")
        alerts = js(browser, "#alerts")
        # a tier change, or straight to the circuit breaker when the score jumps to Critical
        assert "ESZ6" in alerts and ("tier" in alerts or "breaker" in alerts)
        assert feed.wait(180) == 0
    finally:
        stop(feed)

    # a risk officer marks the first tier (or breaker) alert on ESZ6 wrong: stored (through the
    # engine) and shown
    from selenium.common.exceptions import StaleElementReferenceException

    wrong = ", ".join(f'#alerts li[data-kind="{kind}"] .mark[data-sym="ESZ6"] button.mark-wrong'
                      for kind in ("tier", "breaker"))

    def click(d):
        d.find_element(By.CSS_SELECTOR, wrong).click()   # the list is redrawn each second: retry if stale
        return True

    WebDriverWait(browser, 10, ignored_exceptions=(StaleElementReferenceException,)).until(click)
    wait.until(ec.text_to_be_present_in_element((By.ID, "act-result"), "marked wrong"))
    wait.until(lambda d: "marked wrong by risk1" in (js(d, "#alerts") or ""))
    marks = httpx.get(f"{stack.api}/marks", params={"target": "alert"}, headers=OFFICER).json()
    assert marks and marks[0]["sym"] == "ESZ6" and marks[0]["verdict"] == "wrong" and marks[0]["who"] == "risk1"
    assert (stack.tmp / "marks.jsonl").exists()

    browser.find_element(By.ID, "act-sym").send_keys("NQZ6")
    browser.find_element(By.ID, "act-note").send_keys("browser test")
    browser.find_element(By.ID, "btn-kill").click()
    WebDriverWait(browser, 5).until(ec.alert_is_present()).accept()      # the page asks first
    wait.until(ec.text_to_be_present_in_element((By.ID, "act-result"), "done: kill by risk1"))
    nq = 'tr[data-sym="NQZ6"] td.state-cell'
    wait.until(lambda d: "HALTED" in (js(d, nq) or ""))

    audit = httpx.get(f"{stack.api}/audit", params={"action": "kill"}, headers=OFFICER).json()
    assert audit[0]["who"] == "risk1" and audit[0]["outcome"] == "ok" and audit[0]["target"]["sym"] == "NQZ6"
    status = httpx.get(f"{stack.api}/status", headers=OFFICER).json()["rte"]
    assert "NQZ6/*" in status["kills"]                                      # the engine's own state
    wait.until(lambda d: "kill" in (js(d, "#audit") or ""))

    browser.execute_script("select('ESZ6'); window.scrollTo(0, 0);")
    time.sleep(1.0)
    out = stack.tmp / "dashboard.png"
    assert browser.save_screenshot(str(out))
    assert out.stat().st_size > 20_000
    if os.environ.get("PRETRADE_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(out, ROOT / "docs" / "img" / "dashboard.png")
