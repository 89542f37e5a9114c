"""The web client (services/gateway/static) in a real browser against the real stack.

Debian's Chromium (``/usr/bin/chromium``), headless, driven by Playwright; the
four services run as processes over redis-server and FerretDB, with
``CHAT_DEV_MODE=1`` so the page can sign in by name through ``/dev/token``.
Every wait is one of Playwright's auto-retrying expectations.

Screenshots go to ``test-artifacts/browser/`` (and of every open page when a
test fails). ``UPDATE_DOCS_SCREENSHOT=1`` also refreshes ``docs/screenshot.png``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import (
    Browser,
    Locator,
    Page,
    expect,
    sync_playwright,
)

from shared.ratelimit import DEFAULT_LIMITS
from tests.support.servers import FerretDB, RedisServer
from tests.support.stack import ROOT, Service, Stack

# Debian's package; CHAT_TEST_CHROMIUM points elsewhere (another distribution's build).
CHROMIUM = Path(os.environ.get("CHAT_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
DOCS_SCREENSHOT = ROOT / "docs" / "screenshot.png"
DESKTOP = {"viewport": {"width": 1100, "height": 700}}
PHONE = {
    "viewport": {"width": 390, "height": 780},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
}

expect.set_options(timeout=15_000)


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dev_stack(redis_server: RedisServer, ferretdb: FerretDB, workdir: Path) -> Iterator[Stack]:
    stack = Stack(redis_server.url, ferretdb.uri, workdir / "browser", CHAT_DEV_MODE="1")
    try:
        stack.start_all()
        yield stack
    finally:
        stack.stop()


def gateway(stack: Stack) -> Service:
    return [s for s in stack.services if s.service == "gateway" and s.alive()][-1]


@pytest.fixture(scope="module")
def limited_stack(redis_server: RedisServer, ferretdb: FerretDB, workdir: Path) -> Iterator[Stack]:
    """A stack whose send limit is low (3 per 3 s, burst 3); every other limit is high."""
    limits = {action: "1000000/60" for action in DEFAULT_LIMITS} | {"message:send": "3/3"}
    stack = Stack(
        redis_server.url,
        ferretdb.uri,
        workdir / "browser-limited",
        CHAT_DEV_MODE="1",
        CHAT_RATE_LIMITS=",".join(f"{action}={rule}" for action, rule in limits.items()),
    )
    try:
        stack.start_all()
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} not found: the browser tests need Debian's Chromium "
            "(apt-get install -y chromium); they do not use Playwright's own browsers.",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


class People:
    """Opens the client as a user in a context of its own (its own storage and socket)."""

    def __init__(self, browser: Browser, base_url: str) -> None:
        self.browser = browser
        self.base_url = base_url
        self.pages: list[tuple[str, Page]] = []
        self.errors: list[str] = []

    def open(
        self,
        user: str,
        path: str = "/",
        sign_in: bool = True,
        **options: object,
    ) -> Page:
        context = self.browser.new_context(**{**DESKTOP, **options})  # type: ignore[arg-type]
        page = context.new_page()
        page.on("pageerror", lambda exc: self.errors.append(f"{user}: {exc}"))
        page.goto(self.base_url + path)
        if sign_in:
            page.get_by_test_id("signin-user").fill(user)
            page.get_by_test_id("signin-submit").click()
            expect(page.get_by_test_id("me-name")).to_have_text(user)
            expect(page.get_by_test_id("connection-label")).to_have_text("Online")
        self.pages.append((user, page))
        return page

    def close(self, page: Page) -> None:
        page.context.close()

    def screenshot(self, page: Page, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        page.screenshot(path=str(path))
        return path

    def close_all(self, failed_as: str | None) -> None:
        for index, (user, page) in enumerate(self.pages):
            if page.is_closed():
                continue
            if failed_as:
                self.screenshot(page, f"FAILED-{failed_as}-{index}-{user}")
            page.context.close()


@pytest.fixture
def people(browser: Browser, dev_stack: Stack, request: pytest.FixtureRequest) -> Iterator[People]:
    crowd = People(browser, gateway(dev_stack).base_url)
    yield crowd
    report = getattr(request.node, "report_call", None)
    crowd.close_all(request.node.name if report is None or report.failed else None)
    assert not crowd.errors, f"uncaught errors in the page: {crowd.errors}"


# --- page helpers ------------------------------------------------------------------------------


def send(page: Page, text: str) -> None:
    box = page.get_by_test_id("composer-input")
    box.fill(text)
    box.press("Enter")
    expect(box).to_have_value("")


def texts(page: Page) -> Locator:
    return page.get_by_test_id("message-list").get_by_test_id("message-text")


def statuses(page: Page) -> Locator:
    """✓ / ✓✓ / ◷ of one's own messages, oldest first."""
    return page.get_by_test_id("message-list").get_by_test_id("message-status")


def presence_dot(page: Page, user: str) -> Locator:
    return page.get_by_test_id("conversation-members").locator(
        f'[data-testid="presence-dot"][data-user="{user}"]'
    )


def start_conversation(page: Page, others: str, title: str = "") -> str:
    page.get_by_test_id("new-conversation-button").click()
    page.get_by_test_id("new-conversation-participants").fill(others)
    page.get_by_test_id("new-conversation-title").fill(title)
    page.get_by_test_id("new-conversation-submit").click()
    expect(page).to_have_url(re.compile(r"#/c/[0-9a-f]+$"))
    expect(page.get_by_test_id("conversation")).to_be_visible()
    return page.url.rsplit("/", 1)[-1]


def open_only_conversation(page: Page, title: str) -> None:
    item = page.get_by_test_id("conversation-item")
    expect(item).to_have_count(1)
    expect(item.get_by_test_id("conversation-item-title")).to_have_text(title)
    item.click()
    expect(page.get_by_test_id("conversation-title")).to_have_text(title)


# --- scenarios ---------------------------------------------------------------------------------


def test_chat_offline_and_back_with_read_receipts(people: People) -> None:
    alice = people.open("alice")
    bob = people.open("bob")

    # Alice starts a conversation; it appears on Bob's side live.
    start_conversation(alice, "bob")
    expect(alice.get_by_test_id("conversation-title")).to_have_text("bob")
    open_only_conversation(bob, "alice")

    # Both are online, each sees the other's dot.
    expect(presence_dot(alice, "bob")).to_have_attribute("data-status", "online")
    expect(presence_dot(bob, "alice")).to_have_attribute("data-status", "online")

    # Chat both ways, with the typing indicator in between.
    send(alice, "Hi Bob! Lunch at noon?")
    expect(texts(bob)).to_have_text(["Hi Bob! Lunch at noon?"])
    bob.get_by_test_id("composer-input").press_sequentially("Sure, see you there")
    expect(alice.get_by_test_id("typing-indicator")).to_have_text("bob is typing…")
    bob.get_by_test_id("composer-input").press("Enter")
    expect(texts(alice)).to_have_text(["Hi Bob! Lunch at noon?", "Sure, see you there"])
    expect(alice.get_by_test_id("typing-indicator")).to_be_hidden()
    # Each had the conversation open: both messages were read.
    expect(statuses(alice)).to_have_text(["✓✓"])
    expect(statuses(bob)).to_have_text(["✓✓"])
    people.screenshot(alice, "01-alice-chatting")
    people.screenshot(bob, "02-bob-chatting")

    # Alice goes away; Bob sees her dot turn grey and keeps writing.
    people.close(alice)
    expect(presence_dot(bob, "alice")).to_have_attribute("data-status", "offline")
    expect(bob.get_by_test_id("member-status")).to_contain_text("last seen")
    send(bob, "Running 10 minutes late")
    send(bob, "Grab a table by the window?")
    expect(statuses(bob)).to_have_text(["✓✓", "✓", "✓"])  # stored, not read yet
    people.screenshot(bob, "03-bob-alice-away")

    # Alice comes back in a fresh browser: the two messages wait for her, unread.
    alice = people.open("alice")
    expect(presence_dot(bob, "alice")).to_have_attribute("data-status", "online")
    item = alice.get_by_test_id("conversation-item")
    expect(item).to_have_count(1)
    expect(item.get_by_test_id("unread-badge")).to_have_text("2")
    expect(statuses(bob)).to_have_text(["✓✓", "✓", "✓"])
    item.click()
    expect(texts(alice)).to_have_text(
        [
            "Hi Bob! Lunch at noon?",
            "Sure, see you there",
            "Running 10 minutes late",
            "Grab a table by the window?",
        ]
    )
    expect(item.get_by_test_id("unread-badge")).to_have_count(0)

    # Opening the conversation sent a read receipt: ✓ turns into ✓✓ for Bob.
    expect(statuses(bob)).to_have_text(["✓✓", "✓✓", "✓✓"])
    send(alice, "No problem, I will get the window table")
    expect(texts(bob).last).to_have_text("No problem, I will get the window table")
    expect(statuses(alice)).to_have_text(["✓✓", "✓✓"])
    people.screenshot(alice, "04-alice-back")
    shot = people.screenshot(bob, "05-bob-read")
    if os.environ.get("UPDATE_DOCS_SCREENSHOT") == "1":
        shutil.copyfile(shot, DOCS_SCREENSHOT)


def test_network_drop_reconnects_and_catches_up(people: People, dev_stack: Stack) -> None:
    carol = people.open("carol")
    dave = people.open("dave")
    start_conversation(carol, "dave")
    open_only_conversation(dave, "carol")
    send(carol, "Can you hear me?")
    expect(texts(dave)).to_have_text(["Can you hear me?"])
    expect(statuses(carol)).to_have_text(["✓✓"])

    # Carol's link dies and the network stays down: the client notices,
    # says so, and keeps retrying with back-off.
    carol.context.set_offline(True)
    carol.evaluate("window.chatDebug.dropConnection()")
    expect(carol.get_by_test_id("connection-status")).to_be_visible()
    expect(carol.get_by_test_id("connection-text")).to_contain_text("Reconnecting")
    expect(carol.get_by_test_id("toast").filter(has_text="Disconnected")).to_be_visible()
    expect(presence_dot(dave, "carol")).to_have_attribute("data-status", "offline")

    # Meanwhile Dave writes, and Carol writes too (kept until it can be sent).
    for n in range(1, 4):
        send(dave, f"message {n} while you were away")
    expect(statuses(dave)).to_have_text(["✓", "✓", "✓"])
    send(carol, "Sorry, my train went into a tunnel")
    expect(statuses(carol)).to_have_text(["✓✓", "◷"])

    # The network comes back: Carol reconnects, sends what waited, and gets
    # what she missed exactly once (offline queue and sync both deliver it).
    carol.context.set_offline(False)
    expect(carol.get_by_test_id("connection-label")).to_have_text("Online")
    expect(carol.get_by_test_id("connection-status")).to_be_hidden()
    expected = [
        "Can you hear me?",
        "message 1 while you were away",
        "message 2 while you were away",
        "message 3 while you were away",
        "Sorry, my train went into a tunnel",
    ]
    expect(texts(carol)).to_have_text(expected)
    expect(texts(dave)).to_have_text(expected)
    expect(statuses(carol)).to_have_text(["✓✓", "✓✓"])
    expect(statuses(dave)).to_have_text(["✓✓", "✓✓", "✓✓"])

    # An operator notification reaches every open page as a toast.
    subprocess.run(
        [sys.executable, "-m", "shared.notify", "Maintenance at 22:00 UTC", "--level", "warning"],
        env=dev_stack.env("notify"),
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    for page in (carol, dave):
        notice = page.get_by_test_id("toast").filter(has_text="Maintenance at 22:00 UTC")
        expect(notice).to_have_attribute("data-level", "warning")
    people.screenshot(carol, "06-carol-after-drop")


def test_phone_layout_history_and_errors(people: People) -> None:
    erin = people.open("erin", **PHONE)  # type: ignore[arg-type]
    # A narrow screen shows the list or the conversation, never both.
    expect(erin.get_by_test_id("sidebar")).to_be_visible()
    expect(erin.get_by_test_id("conversation-pane")).to_be_hidden()
    cid = start_conversation(erin, "frank, grace", title="Weekend trip")
    expect(erin.get_by_test_id("sidebar")).to_be_hidden()
    expect(erin.get_by_test_id("conversation-title")).to_have_text("Weekend trip")
    expect(erin.get_by_test_id("conversation-members").get_by_test_id("member")).to_have_count(2)

    # A long conversation (more than one page of history) from Frank.
    frank = people.open("frank")
    open_only_conversation(frank, "Weekend trip")
    for n in range(1, 61):
        frank.get_by_test_id("composer-input").fill(f"idea #{n}")
        frank.get_by_test_id("composer-input").press("Enter")
    expect(texts(frank)).to_have_count(60)
    expect(frank.locator('[data-testid="message"][data-state="sending"]')).to_have_count(0)
    expect(texts(erin)).to_have_count(60)
    send(erin, "Let's pick one on Friday")
    expect(texts(frank).last).to_have_text("Let's pick one on Friday")
    people.screenshot(erin, "07-phone-conversation")

    # Back to the list and in again, then read from the start of the history.
    erin.get_by_test_id("back-button").click()
    expect(erin.get_by_test_id("sidebar")).to_be_visible()
    expect(erin.get_by_test_id("conversation-pane")).to_be_hidden()
    people.screenshot(erin, "08-phone-list")
    erin.get_by_test_id("conversation-item").click()
    expect(erin.get_by_test_id("conversation-pane")).to_be_visible()
    expect(texts(erin).last).to_be_in_viewport()  # opens at the newest message

    # A fresh device loads only the newest page; older ones come on scrolling up.
    grace = people.open("grace")
    open_only_conversation(grace, "Weekend trip")
    expect(texts(grace)).to_have_count(50)
    expect(texts(grace).first).to_have_text("idea #12")
    expect(texts(grace).last).to_be_in_viewport()
    expect(grace.get_by_test_id("load-older")).to_be_visible()
    # Held at the top (a render caused by a receipt arriving right after one
    # scroll may move the view back down before its scroll event is seen).
    grace.wait_for_function(
        """() => {
            document.querySelector('[data-testid="message-scroller"]').scrollTop = 0;
            return document.querySelectorAll(
                '[data-testid="message-list"] [data-testid="message-text"]').length === 61;
        }""",
        timeout=15_000,
    )
    expect(texts(grace)).to_have_count(61)
    expect(texts(grace).first).to_have_text("idea #1")
    expect(grace.get_by_test_id("history-start")).to_be_visible()
    expect(grace.get_by_test_id("load-older")).to_be_hidden()

    # Somebody who is not a member follows a link to the conversation.
    mallory = people.open("mallory", path=f"/#/c/{cid}", sign_in=False)
    mallory.get_by_test_id("signin-user").fill("mallory")
    mallory.get_by_test_id("signin-submit").click()
    expect(mallory.get_by_test_id("toast")).to_contain_text(
        "You are not a member of this conversation"
    )
    expect(mallory.get_by_test_id("no-conversation")).to_be_visible()
    expect(texts(mallory)).to_have_count(0)


def test_rate_limited_sends_wait_and_keep_their_order(people: People, limited_stack: Stack) -> None:
    """Over the server's send limit: a toast, then every message goes out, in order."""
    people.base_url = gateway(limited_stack).base_url
    heidi = people.open("heidi")
    ivan = people.open("ivan")
    start_conversation(heidi, "ivan")
    open_only_conversation(ivan, "heidi")
    words = ["one", "two", "three", "four", "five", "six"]
    for word in words:  # faster than 3 per 3 s
        send(heidi, word)
    expect(heidi.get_by_test_id("toast").filter(has_text="too fast")).to_contain_text(
        "You are sending too fast. Retrying in"
    )
    expect(statuses(heidi).filter(has_text="◷").first).to_be_visible()
    people.screenshot(heidi, "09-rate-limited")
    expect(statuses(heidi)).to_have_text(["✓✓"] * len(words))
    expect(texts(heidi)).to_have_text(words)
    expect(texts(ivan)).to_have_text(words)


def test_gateway_restart_clients_reconnect(people: People, dev_stack: Stack) -> None:
    """SIGTERM on the gateway closes sockets with 1012; both pages come back by themselves."""
    judy = people.open("judy")
    ken = people.open("ken")
    start_conversation(judy, "ken")
    open_only_conversation(ken, "judy")
    send(judy, "before the restart")
    expect(texts(ken)).to_have_text(["before the restart"])

    old = gateway(dev_stack)
    old.stop()
    for page in (judy, ken):
        expect(page.get_by_test_id("connection-status")).to_be_visible()
    send(ken, "written while the server restarts")
    expect(statuses(ken)).to_have_text(["◷"])

    dev_stack.start("gateway", CHAT_GATEWAY_PORT=str(old.port))
    for page in (judy, ken):
        expect(page.get_by_test_id("connection-label")).to_have_text("Online", timeout=30_000)
    expect(texts(judy)).to_have_text(["before the restart", "written while the server restarts"])
    expect(statuses(ken)).to_have_text(["✓✓"])
    expect(presence_dot(ken, "judy")).to_have_attribute("data-status", "online")
