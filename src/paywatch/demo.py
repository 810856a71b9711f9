"""``paywatch demo``: a one-minute tour on a local anvil devnet, SQLite and a local receiver.

It starts anvil, deploys a test USDT, writes a demo networks file, starts the API, the worker and
a callback receiver that verifies every signature, creates three invoices through the API, pays
them from anvil's (public test) accounts and shows the statuses and callbacks live. The third
invoice is left to expire: the demo fast-forwards its clock (and the chain's) past the expiry.
Last, a fiat-priced invoice (12.50 USD) is paid through its hosted page: the page URL is printed,
the payer's choice of USDT opens an attempt, and the amount the page shows is paid on the devnet.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from paywatch.api.app import create_app
from paywatch.callbacks.signing import verify
from paywatch.config import AppConfig, Settings, load_config, raw_document
from paywatch.devnet.chain import Chain
from paywatch.devnet.node import AnvilNode, free_port
from paywatch.runtime import open_database
from paywatch.store.db import session_scope
from paywatch.stores import create_store
from paywatch.worker import Worker

#: account m/44'/60'/0' of the public "abandon ... about" test mnemonic: demo only, never real funds
DEMO_XPUB = (
    "xpub6DCoCpSuQZB2jawqnGMEPS63ePKWkwWPH4TU45Q7LPXWuNd8TMtVxRrgjtEshuqpK3mdhaWHPFsBngh5GFZaM6si3yZdUsT8ddYM3PwnATt"
)
USDT = 10**6
FINAL = {"COMPLETED", "EXPIRED", "PARTIALLY_EXPIRED", "CANCELLED"}


class DemoClock:
    """Wall-clock time plus an offset the demo moves forward to show an expiry without waiting."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@dataclass
class Receiver:
    """A local merchant endpoint that verifies each callback's Standard Webhooks signature."""

    secret: str
    events: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> tuple[ThreadingHTTPServer, str]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                ok = verify(receiver.secret, headers, body, datetime.now(UTC))
                event = json.loads(body)
                with receiver.lock:
                    receiver.events.append(
                        {
                            "type": event["type"],
                            "invoice": event["data"].get("id"),
                            "version": event["data"].get("status_version"),
                            "verified": ok,
                            "id": headers.get("webhook-id"),
                        }
                    )
                self.send_response(204 if ok else 400)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                return

        server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server, f"http://127.0.0.1:{server.server_address[1]}/paywatch"

    def for_invoice(self, invoice_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [e for e in self.events if e["invoice"] == invoice_id]


def write_networks(directory: Path, rpc_url: str, usdt: str) -> Path:
    path = directory / "networks.yaml"
    path.write_text(
        raw_document(
            {
                "networks": {
                    "devnet": {
                        "family": "evm",
                        "chain_id": 31337,
                        "rpc_urls": [rpc_url],
                        "confirmations": 2,
                        "poll_interval": 0.5,
                        "xpub": DEMO_XPUB,
                        "explorer_tx_url": None,
                        "assets": {"ETH": {"native": True, "decimals": 18}, "USDT": {"contract": usdt, "decimals": 6}},
                    }
                }
            }
        )
    )
    return path


def render(invoices: dict[str, dict[str, Any]], receiver: Receiver, notes: list[str], elapsed: float) -> Group:
    table = Table(title=f"paywatch demo: {elapsed:4.1f} s")
    for column in ("invoice", "scenario", "amount", "paid", "status", "flags", "callbacks verified"):
        table.add_column(column)
    for label, inv in invoices.items():
        events = receiver.for_invoice(inv["id"])
        verified = sum(1 for e in events if e["verified"])
        table.add_row(
            inv["id"],
            label,
            f"{inv['amount']} USDT",
            inv["amount_paid"],
            inv["status"],
            ",".join(inv["flags"]),
            f"{len(events)} ({verified}): " + " ".join(e["type"].removeprefix("invoice.") for e in events),
        )
    return Group(table, *notes[-6:])


async def drive(
    api: str,
    key: str,
    chain: Chain,
    token: str,
    clock: DemoClock,
    receiver: Receiver,
    console: Console,
    started: float,
    deadline: float,
) -> bool:
    notes: list[str] = []
    invoices: dict[str, dict[str, Any]] = {}
    async with httpx.AsyncClient(base_url=api, headers={"X-Api-Key": key}, timeout=10) as client:

        async def create(label: str, amount: str, expires_in: int) -> None:
            reply = await client.post(
                "/v1/invoices",
                json={
                    "network": "devnet",
                    "asset": "USDT",
                    "amount": amount,
                    "expires_in": expires_in,
                    "order_id": f"demo-{label}",
                },
            )
            reply.raise_for_status()
            invoices[label] = reply.json()
            notes.append(f"created {label}: pay {amount} USDT to {invoices[label]['address']}")

        async def pay(label: str, units: int) -> None:
            tx = await asyncio.to_thread(chain.token_transfer, token, invoices[label]["address"], units)
            notes.append(f"paid {units / USDT:g} USDT to {label} in {tx[:14]}…")

        async def refresh() -> None:
            for label, inv in invoices.items():
                invoices[label] = (await client.get(f"/v1/invoices/{inv['id']}")).json()

        await create("exact", "10", 600)
        await create("partial+top-up", "10", 600)
        await create("left to expire", "5", 60)
        await pay("exact", 10 * USDT)
        await pay("partial+top-up", 4 * USDT)
        steps = {"topped_up": False, "fast_forwarded": False}
        with Live(render(invoices, receiver, notes, 0), console=console, refresh_per_second=4) as live:
            while time.monotonic() < deadline:
                await refresh()
                if not steps["topped_up"] and invoices["partial+top-up"]["status"] == "PARTIAL":
                    await pay("partial+top-up", 6 * USDT)
                    steps["topped_up"] = True
                done = invoices["exact"]["status"] == "COMPLETED" and steps["topped_up"]
                if done and not steps["fast_forwarded"]:
                    clock.offset += timedelta(seconds=61)
                    await asyncio.to_thread(chain.increase_time, 61)
                    steps["fast_forwarded"] = True
                    notes.append("fast-forwarded the clock and the chain by 61 s: the third invoice's window closes")
                live.update(render(invoices, receiver, notes, time.monotonic() - started))
                if all(_settled(inv, receiver) for inv in invoices.values()):
                    break
                await asyncio.sleep(0.5)
    ok = all(_settled(inv, receiver) for inv in invoices.values())
    statuses = [invoices[k]["status"] for k in ("exact", "partial+top-up", "left to expire")]
    verified = all(e["verified"] for e in receiver.events)
    console.print()
    console.print(
        f"summary: statuses {statuses}; {len(receiver.events)} callbacks received, "
        f"{'all' if verified else 'NOT all'} signatures verified; {time.monotonic() - started:.1f} s"
    )
    return ok and verified and statuses == ["COMPLETED", "COMPLETED", "EXPIRED"]


async def pay_through_page(
    base: str, key: str, chain: Chain, token: str, console: Console, receiver: Receiver, deadline: float
) -> bool:
    """A fiat invoice paid the way a payer does it: open its page, choose USDT, pay what it shows;
    then its own signed ``invoice.completed`` callback arrives (the worker re-evaluates it)."""
    async with httpx.AsyncClient(base_url=base, headers={"X-Api-Key": key}, timeout=10) as client:
        created = await client.post(
            "/v1/invoices",
            json={
                "price": {"amount": "12.50", "currency": "USD"},
                "currencies": ["devnet:USDT", "devnet:ETH"],
                "items": [{"description": "Demo mug", "quantity": 1, "unit_price": "12.50"}],
                "redirect_url": "https://shop.example/thanks",
            },
        )
        created.raise_for_status()
        url, fiat_id = created.json()["invoice_url"], created.json()["id"]
        console.print(f"fiat invoice of 12.50 USD: pay page {url}")
    async with httpx.AsyncClient(timeout=10) as browser:
        loaded = time.monotonic()
        page = await browser.get(url)
        page.raise_for_status()
        chosen = await browser.post(f"{url}/attempts", json={"currency": "devnet:USDT"})
        chosen.raise_for_status()
        attempt = chosen.json()["payments"][0]
        console.print(f"payer chose USDT: pay {attempt['crypto_amount']} USDT to {attempt['address']}")
        units = int(Decimal(attempt["crypto_amount"]) * USDT)
        await asyncio.to_thread(chain.token_transfer, token, attempt["address"], units)
        status = ""
        while time.monotonic() < deadline:
            status = (await browser.get(f"{url}/status")).json()["status"]
            if status == "COMPLETED":
                break
            await asyncio.sleep(0.5)
    paid_after = time.monotonic() - loaded
    while time.monotonic() < deadline and not any(
        e["type"] == "invoice.completed" for e in receiver.for_invoice(fiat_id)
    ):
        await asyncio.sleep(0.2)
    events = receiver.for_invoice(fiat_id)
    console.print(
        f"pay page: {status} {paid_after:.1f} s after the first load; "
        f"page weight {len(page.content) / 1024:.1f} KB (one request: inline script, style and QR)"
    )
    console.print(
        f"fiat invoice {fiat_id} callbacks: "
        + " ".join(f"{e['type'].removeprefix('invoice.')}{'' if e['verified'] else ' (NOT verified)'}" for e in events)
    )
    completed = any(e["type"] == "invoice.completed" and e["verified"] for e in events)
    return status == "COMPLETED" and completed


def _settled(invoice: dict[str, Any], receiver: Receiver) -> bool:
    if invoice["status"] not in FINAL:
        return False
    final_event = "invoice." + invoice["status"].lower()
    return any(e["type"] == final_event for e in receiver.for_invoice(invoice["id"]))


def run_demo(
    *, anvil: Path | None = None, workdir: Path | None = None, timeout: float = 60.0, console: Console | None = None
) -> bool:
    """Run the demo; True when all three invoices ended as expected with verified callbacks."""
    console = console or Console()
    started = time.monotonic()
    directory = workdir or Path(tempfile.mkdtemp(prefix="paywatch-demo-"))
    node = AnvilNode("--block-time", "1", binary=anvil).start()
    server: ThreadingHTTPServer | None = None
    try:
        chain = Chain(node)
        token = chain.deploy("TestToken", "Tether USD (demo)", "USDT", 6, 10**9 * USDT)
        chain.token_transfer(token, chain.payer, 10**6 * USDT, sender=chain.accounts[0])
        networks = write_networks(directory, node.url, token)
        port = free_port()
        settings = Settings(
            database_url=f"sqlite:///{directory / 'demo.db'}",
            networks=networks,
            allow_private_callbacks=True,
            # checkout on the devnet: USDT fixed at 1 USD (no price API is asked), pages served here
            rates_sources=(),
            rates_fixed={"USDT": {"USD": Decimal(1)}},
            public_url=f"http://127.0.0.1:{port}",
            development=True,
        )
        config: AppConfig = load_config(settings)
        engine = open_database(config)
        clock = DemoClock()
        receiver = Receiver(secret="")
        server, callback_url = receiver.start()
        with session_scope(engine) as session:
            created = create_store(session, "demo shop", clock(), callback_url=callback_url)
        receiver.secret = created.webhook_secret
        console.print(f"anvil at {node.url}, test USDT at {token}, data in {directory}")
        return asyncio.run(
            _serve_and_drive(
                config,
                engine,
                port,
                clock,
                receiver,
                created.api_key,
                chain,
                token,
                console,
                started,
                started + timeout,
            )
        )
    finally:
        if server is not None:
            server.shutdown()
        node.close()


async def _serve_and_drive(
    config: AppConfig,
    engine: Any,
    port: int,
    clock: DemoClock,
    receiver: Receiver,
    key: str,
    chain: Chain,
    token: str,
    console: Console,
    started: float,
    deadline: float,
) -> bool:
    base = f"http://127.0.0.1:{port}"
    app = create_app(config, engine=engine, clock=clock)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    worker = Worker(config, engine, clock=clock, sweep_seconds=1.0, dispatch_seconds=0.5)
    tasks = [asyncio.create_task(server.serve()), asyncio.create_task(worker.run(install_signals=False))]
    try:
        while not server.started:
            await asyncio.sleep(0.05)
        ok = await drive(base, key, chain, token, clock, receiver, console, started, deadline)
        paid = await pay_through_page(base, key, chain, token, console, receiver, deadline=time.monotonic() + 30)
        return ok and paid
    finally:
        worker.stop()
        server.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
