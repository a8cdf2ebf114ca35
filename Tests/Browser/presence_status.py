#!/usr/bin/env python3
"""The presence server's HTTP side, read as its users would read it.

  presence_status.py metrics URL       parses URL/metrics with prometheus_client's own
                                       text parser; prints {"name{labels}": value} as JSON
  presence_status.py page URL SHOT     opens the status page in headless Chromium, prints
                                       "listeners: N" at once, then again each time the
                                       count changes (up to 60 s); screenshots to SHOT

Run by Tests/Q2QTests/PresenceHTTPTests.swift.
"""
import json
import os
import sys
import time
import urllib.request


def metrics(url):
    from prometheus_client.parser import text_string_to_metric_families
    text = urllib.request.urlopen(url.rstrip("/") + "/metrics", timeout=10).read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{key}="{value}"' for key, value in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    print(json.dumps(samples, sort_keys=True))


def page(url, shot):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1100,800"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")))
    try:
        driver.get(url)
        def listeners():
            text = driver.find_element(By.ID, "listeners").text
            return int(text) if text.isdigit() else None
        deadline = time.time() + 30
        while listeners() is None and time.time() < deadline:
            time.sleep(0.2)
        first = listeners()
        if first is None:
            print("failed: the page never showed a listener count", flush=True)
            sys.exit(1)
        print(f"listeners: {first}", flush=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            now = listeners()
            if now is not None and now != first:
                print(f"listeners: {now}", flush=True)
                driver.save_screenshot(shot)
                print("ok", flush=True)
                return
            time.sleep(0.2)
        driver.save_screenshot(shot)
        print("failed: the listener count did not change", flush=True)
        sys.exit(1)
    finally:
        driver.quit()


if __name__ == "__main__":
    if sys.argv[1] == "metrics":
        metrics(sys.argv[2])
    else:
        page(sys.argv[2], sys.argv[3])
