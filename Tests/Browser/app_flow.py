#!/usr/bin/env python3
"""Drives two `vertex app` pages in headless Chromium (Selenium), as two people would.

alice signs in, adds bob as a contact and sends him files; bob signs in and answers
each prompt: once, refuse, not at all (the prompt times out), always — and then a
transfer from alice arrives with no prompt. The access guard is probed with raw HTTP
requests. Prints one line per step; exits 1 at the first failure, with screenshots.

Run by Tests/Q2QTests/WebAppTests.swift, which starts the presence server and the
apps and checks the files on bob's disk.
"""
import argparse
import http.client
import json
import os
import sys
import time
import urllib.parse

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1300,1250", "--no-first-run", "--disable-extensions"):
        options.add_argument(argument)
    service = Service(executable_path=os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
    return webdriver.Chrome(options=options, service=service)


class Page:
    def __init__(self, name, url, shots):
        self.name, self.url, self.shots = name, url, shots
        self.driver = browser()

    def open(self):
        self.driver.get(self.url)
        self.wait_text("#live", "live", 30)
        # The token went into a cookie; the address bar no longer shows it.
        assert "token=" not in self.driver.current_url, self.driver.current_url

    def css(self, selector):
        return self.driver.find_elements(By.CSS_SELECTOR, selector)

    def wait(self, condition, seconds, what):
        try:
            # The page redraws a list when its data changes: an element found a moment
            # ago may be gone; the condition is then asked again.
            return WebDriverWait(self.driver, seconds, poll_frequency=0.2,
                                 ignored_exceptions=[StaleElementReferenceException]).until(lambda _: condition())
        except TimeoutException:
            self.shot("failed")
            raise AssertionError(f"{self.name}: timed out after {seconds} s waiting for {what}")

    def wait_for(self, selector, seconds=30):
        return self.wait(lambda: (self.css(selector) or [None])[0], seconds, selector)

    def wait_text(self, selector, text, seconds=30):
        self.wait(lambda: any(text in e.text for e in self.css(selector)), seconds, f"{selector} showing {text!r}")

    def type(self, selector, text):
        field = self.wait_for(selector)
        field.clear()
        field.send_keys(text)

    def click(self, selector):
        self.wait_for(selector).click()

    def sign_in(self, address, password, server):
        self.type("#signin-address", address)
        self.type("#signin-password", password)
        self.type("#signin-server", server)
        self.click("#signin-submit")
        self.wait_for(f'li.identity[data-address="{address}"]')
        self.wait_text(f'li.identity[data-address="{address}"]', "online")

    def transfer_ids(self, direction):
        return {row.get_attribute("data-id") for row in self.css(f'tr.transfer[data-direction="{direction}"]')}

    def new_transfer(self, direction, before, seconds=30):
        def found():
            fresh = self.transfer_ids(direction) - before
            return next(iter(fresh)) if fresh else None
        return self.wait(found, seconds, f"a new {direction} transfer")

    def row(self, id):
        return f'tr.transfer[data-id="{id}"]'

    def wait_state(self, id, state, seconds=60):
        """The row of transfer `id` once in `state`, read at once (text, percent, outcome)."""
        def read():
            rows = self.css(f'{self.row(id)}[data-state="{state}"]')
            if not rows:
                return None
            row = rows[0]
            return {"text": row.text, "percent": row.find_element(By.CSS_SELECTOR, ".percent").text,
                    "outcome": row.find_element(By.CSS_SELECTOR, ".outcome").text}
        return self.wait(read, seconds, f"transfer {id} {state}")

    def shot(self, label):
        path = os.path.join(self.shots, f"app-{self.name}-{label}.png")
        self.driver.save_screenshot(path)
        return path

    def quit(self):
        self.driver.quit()


def step(text):
    print(f"step: {text}", flush=True)


def send(alice, sender, receiver, path):
    before = alice.transfer_ids("send")
    Select(alice.wait_for("#send-from")).select_by_value(sender)
    Select(alice.wait_for("#send-to")).select_by_value(receiver)
    alice.wait_for("#send-files").send_keys(path)
    alice.click("#send-submit")
    return alice.new_transfer("send", before)


def answer_prompt(bob, sender, answer):
    bob.wait_for(f'.prompt[data-from="{sender}"]', 30)
    bob.click(f'.prompt[data-from="{sender}"] button[data-answer="{answer}"]')
    bob.wait(lambda: not bob.css(".prompt"), 10, "the prompt to go")


def done_and_verified(page, id):
    row = page.wait_state(id, "done")
    assert row["percent"] == "100 %", f"{page.name}: {row}"
    assert row["outcome"] == "verified", f"{page.name}: {row}"


def probe(url, method, path, headers, body=None):
    """A raw HTTP request; its status and body."""
    parsed = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=10)
    connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    for name, value in headers.items():
        connection.putheader(name, value)
    if body is not None:
        connection.putheader("Content-Length", str(len(body)))
    connection.endheaders(body)
    response = connection.getresponse()
    return response.status, response.read().decode()


def guard(url):
    """Requests without the token, from another Origin, or for another Host: 403, and
    nothing changed."""
    parsed = urllib.parse.urlsplit(url)
    token = urllib.parse.parse_qs(parsed.query)["token"][0]
    own = f"127.0.0.1:{parsed.port}"
    good = {"Host": own, "Authorization": f"Bearer {token}"}
    contact = json.dumps({"address": "mallory@evil.test", "name": "Mallory"}).encode()
    attempts = [
        ("no token", "GET", "/api/state", {"Host": own}, None),
        ("no token, POST", "POST", "/api/contacts", {"Host": own, "Origin": f"http://{own}", "Content-Type": "application/json"}, contact),
        ("wrong token", "GET", "/api/state", {"Host": own, "Authorization": "Bearer " + "A" * len(token)}, None),
        ("token for another port", "GET", "/", {"Host": own, "Cookie": f"vertex_app_1={token}"}, None),
        ("foreign Origin", "POST", "/api/contacts", dict(good, **{"Origin": "http://evil.test", "Content-Type": "application/json"}), contact),
        ("null Origin", "POST", "/api/contacts", dict(good, **{"Origin": "null", "Content-Type": "application/json"}), contact),
        ("foreign Host (DNS rebinding)", "POST", "/api/contacts", dict(good, **{"Host": f"evil.test:{parsed.port}", "Content-Type": "application/json"}), contact),
        ("foreign Host, GET", "GET", "/api/state", dict(good, Host=f"evil.test:{parsed.port}"), None),
        ("foreign Host, token in URL", "GET", f"/?token={token}", {"Host": f"evil.test:{parsed.port}"}, None),
    ]
    for label, method, path, headers, body in attempts:
        status, text = probe(url, method, path, headers, body)
        assert status == 403, f"{label}: {status} {text}"
        print(f"refused: {label}: {text.strip()}", flush=True)
    status, text = probe(url, "GET", "/api/state", good)
    assert status == 200, f"with the token: {status}"
    assert "mallory" not in text, "a refused request changed the contacts"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--alice-url", required=True)
    parser.add_argument("--bob-url", required=True)
    parser.add_argument("--server", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--files", required=True, help="directory with first.bin, refused.bin, late.bin, always.bin, again.bin")
    parser.add_argument("--screenshots", required=True)
    parser.add_argument("--prompt-timeout", type=int, required=True)
    arguments = parser.parse_args()
    os.makedirs(arguments.screenshots, exist_ok=True)
    alice_address, bob_address = "alice@a.test", "bob@b.test"
    file = lambda name: os.path.abspath(os.path.join(arguments.files, name))

    guard(arguments.alice_url)
    step("the access guard refused every request without the token, from another Origin or for another Host")

    alice = Page("alice", arguments.alice_url, arguments.screenshots)
    bob = Page("bob", arguments.bob_url, arguments.screenshots)
    try:
        alice.open()
        bob.open()
        step("both pages are live")
        alice.sign_in(alice_address, arguments.password, arguments.server)
        bob.sign_in(bob_address, arguments.password, arguments.server)
        step("alice and bob signed in")

        alice.type("#contact-address", bob_address)
        alice.type("#contact-name", "Bob")
        alice.type("#contact-server", arguments.server)
        alice.click("#contact-submit")
        alice.wait_for(f'li.contact[data-address="{bob_address}"][data-reachable="true"]', 30)
        step("alice added bob, who is reachable")

        sent = send(alice, alice_address, bob_address, file("first.bin"))
        received = bob.new_transfer("receive", set())
        bob.wait_for(f'.prompt[data-from="{alice_address}"]')
        bob.shot("prompt")
        answer_prompt(bob, alice_address, "once")
        done_and_verified(alice, sent)
        done_and_verified(bob, received)
        bob.wait_for(f'tr.received[data-sender="{alice_address}"]')
        print("screenshot: " + alice.shot("sent"), flush=True)
        print("screenshot: " + bob.shot("received"), flush=True)
        step("first.bin: bob accepted once; both pages show 100 % and verified")

        before = bob.transfer_ids("receive")
        sent = send(alice, alice_address, bob_address, file("refused.bin"))
        answer_prompt(bob, alice_address, "refuse")
        row = alice.wait_state(sent, "failed")
        assert "declined" in row["text"], row
        bob.wait_state(bob.new_transfer("receive", before), "refused")
        step("refused.bin: bob refused; alice's page says declined")

        before = bob.transfer_ids("receive")
        sent = send(alice, alice_address, bob_address, file("late.bin"))
        bob.wait_for(f'.prompt[data-from="{alice_address}"]')
        row = alice.wait_state(sent, "failed", arguments.prompt_timeout + 30)
        assert "did not answer in time" in row["text"], row
        assert not bob.css(".prompt"), "the prompt stayed after its timeout"
        bob.wait_state(bob.new_transfer("receive", before), "refused")
        step("late.bin: nobody answered; refused after the prompt timeout")

        before = bob.transfer_ids("receive")
        sent = send(alice, alice_address, bob_address, file("always.bin"))
        answer_prompt(bob, alice_address, "always")
        done_and_verified(alice, sent)
        done_and_verified(bob, bob.new_transfer("receive", before))
        step("always.bin: bob accepted always")

        before = bob.transfer_ids("receive")
        sent = send(alice, alice_address, bob_address, file("again.bin"))
        received = bob.new_transfer("receive", before)
        prompted = False
        deadline = time.time() + 60
        while time.time() < deadline:
            prompted = prompted or bool(bob.css(".prompt"))
            try:
                states = {r.get_attribute("data-state") for r in bob.css(bob.row(received))}
            except StaleElementReferenceException:
                continue
            if "done" in states or "failed" in states:
                break
            time.sleep(0.1)
        assert not prompted, "bob was asked again about a sender he trusts always"
        done_and_verified(alice, sent)
        done_and_verified(bob, received)
        step("again.bin: arrived with no prompt")
        print("screenshot: " + bob.shot("final"), flush=True)
        print("screenshot: " + alice.shot("final"), flush=True)
        print("ok", flush=True)
    finally:
        alice.quit()
        bob.quit()


if __name__ == "__main__":
    try:
        main()
    except AssertionError as failure:
        print(f"failed: {failure}", flush=True)
        sys.exit(1)
