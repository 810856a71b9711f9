"""The pay page in a real browser (Debian's chromium driven by Playwright) against anvil and the real scanner.

The page is served by uvicorn in a thread; the test pays what the page shows with a real token
transfer on anvil, runs the scanner, and waits for the page to change by itself (no reload).
Screenshots of each state land in tests/artifacts/ (gitignored).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import zxingcpp
from sqlalchemy.engine import Engine

from paywatch.api.app import create_app
from paywatch.checkout.context import Checkout
from paywatch.checkout.rates import RateBook, RatesConfig
from paywatch.checkout.rates.fiat import EcbConverter
from paywatch.checkout.service import CheckoutSettings, FiatInvoiceRequest, create_fiat_invoice
from paywatch.store.db import session_scope
from tests.support.evm_fixtures import Deployed, chain_snapshot_fixture, deployed_fixture, h_fixture  # noqa: F401
from tests.support.evm_harness import Harness
from tests.support.evm_node import anvil_node_fixture  # noqa: F401
from tests.support.png import grayscale

playwright_sync = pytest.importorskip("playwright.sync_api")
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts" / "checkout"
pytestmark = [
    pytest.mark.anvil,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed (.ci/run installs it)"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(h: Harness, engine: Engine) -> Iterator[tuple[str, Harness]]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    rates = RatesConfig.model_validate({"sources": [], "fixed": {"USDT": {"USD": "1"}, "ETH": {"USD": "2000"}}})
    checkout = Checkout(
        RateBook(rates, httpx.Client(), EcbConverter()), CheckoutSettings(public_url=base, development=True)
    )
    app = create_app(h.config, engine=engine, clock=h.clock, checkout=checkout)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield base, h
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """One Chromium for the module's tests on this process (a launch costs about a second of CPU)."""
    with playwright_sync.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def browser(chromium: Any) -> Iterator[Any]:
    """The shared Chromium; each ``new_page()`` is a browser context of its own (no shared cookies,
    storage or cache), and every context a test opened is closed after it (no page left polling)."""
    yield chromium
    for context in chromium.contexts:
        context.close()


def fiat_invoice(h: Harness, base: str, amount: str, **kw: Any) -> str:
    with session_scope(h.engine) as s:
        inv = create_fiat_invoice(
            s,
            h.config,
            h.store,
            FiatInvoiceRequest(
                price={"amount": amount, "currency": "USD"},
                currencies=["anvil:USDT", "anvil:ETH"],
                redirect_url="https://shop.example/thanks",
                **kw,
            ),
            h.clock(),
            RateBook(RatesConfig(sources=()), httpx.Client(), EcbConverter()),
            CheckoutSettings(public_url=base),
        )
        return f"{base}/pay/{inv.slug}"


def shot(page: Any, name: str) -> bytes:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    data: bytes = page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    return data


def decode_qr(page: Any) -> str:
    png = page.locator("#qr").screenshot()
    width, height, pixels = grayscale(png)
    [code] = zxingcpp.read_barcodes(memoryview(pixels).cast("B", (height, width)))
    return str(code.text)


def choose_usdt(page: Any) -> tuple[str, str]:
    page.get_by_role("button", name="Pay with USDT (anvil)").click()
    page.locator("#attempt").wait_for(state="visible")
    return page.locator("#amount").inner_text(), page.locator("#address").inner_text()


def pay_and_scan(served_h: Harness, usdt: str, address: str, amount: str) -> None:
    served_h.chain.token_transfer(usdt, address, int(Decimal(amount) * 10**6))
    served_h.scan()


def test_pay_through_the_page(served: tuple[str, Harness], chain_snapshot: Deployed, browser: Any) -> None:
    base, h = served
    url = fiat_invoice(h, base, "12.34", items=[{"description": "Mug", "quantity": 1, "unit_price": "12.34"}])
    page = browser.new_page(viewport={"width": 390, "height": 844})  # phone-sized
    started = time.monotonic()
    page.goto(url)
    shot(page, "1-choose")
    amount, address = choose_usdt(page)
    assert amount == "12.34" and address.startswith("0x")
    uri = decode_qr(page)
    assert (
        uri == (f"ethereum:{chain_snapshot.usdt}@{h.network.chain_id}/transfer?address={address}&uint256=12340000")
        or uri.lower()
        == (f"ethereum:{chain_snapshot.usdt}@{h.network.chain_id}/transfer?address={address}&uint256=12340000").lower()
    )
    shot(page, "2-attempt")
    pay_and_scan(h, chain_snapshot.usdt, address, amount)
    page.locator("#status").filter(has_text="Confirming").wait_for()
    shot(page, "3-confirming")
    h.chain.mine(3)
    h.scan()
    page.locator("#status").filter(has_text="Paid").wait_for()
    assert page.locator("#redirect").is_visible()
    assert page.locator("#redirect").get_attribute("href") == "https://shop.example/thanks"
    shot(page, "4-paid")
    elapsed = time.monotonic() - started
    (ARTIFACTS / "timing.txt").write_text(f"first load to paid: {elapsed:.2f} s\n")


def test_partial_then_remainder(served: tuple[str, Harness], chain_snapshot: Deployed, browser: Any) -> None:
    base, h = served
    page = browser.new_page()
    page.goto(fiat_invoice(h, base, "20.00"))
    _, address = choose_usdt(page)
    pay_and_scan(h, chain_snapshot.usdt, address, "5")
    h.chain.mine(3)
    h.scan()
    page.locator("#status").filter(has_text="Partially paid").wait_for()
    assert page.locator("#remaining").inner_text() == "15.00"
    shot(page, "5-partial")
    page.get_by_role("button", name="Pay the remainder").click()
    amount, second = choose_usdt(page)
    assert amount == "15" or Decimal(amount) == Decimal("15")
    pay_and_scan(h, chain_snapshot.usdt, second, amount)
    h.chain.mine(3)
    h.scan()
    page.locator("#status").filter(has_text="Paid").wait_for()
    shot(page, "6-remainder-paid")


def test_expired_page_refuses_a_new_attempt(
    served: tuple[str, Harness], chain_snapshot: Deployed, browser: Any
) -> None:
    base, h = served
    url = fiat_invoice(h, base, "3.00", expires_in=60)
    h.chain.increase_time(120)
    h.chain.mine(1)
    page = browser.new_page()
    page.goto(url)
    page.locator("#status").filter(has_text="Expired").wait_for()
    page.get_by_role("button", name="Pay with USDT (anvil)").click()
    page.locator("#choose-error").filter(has_text="EXPIRED").wait_for()
    assert page.locator("#attempt").is_hidden()
    shot(page, "7-expired")
