"""The baseline of bench/scale_api.py: a bare FastAPI endpoint doing one INSERT per request.

It runs under the same server as ``paywatch api`` (uvicorn, the same ``uvicorn.Config`` settings),
with paywatch's engine factory (same driver and pool) and a synchronous handler (FastAPI runs it in
its thread pool, as it runs paywatch's), so the difference to paywatch is paywatch's own work.

    PAYWATCH_DATABASE_URL=postgresql://... python bench/baseline_api.py --port 8100
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from datetime import UTC, datetime
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from paywatch.store.db import make_engine

TABLE = "bench_baseline_invoices"
CREATE_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} (id varchar(40) PRIMARY KEY, network varchar(40) NOT NULL, "
    "asset varchar(40) NOT NULL, amount varchar(80) NOT NULL, order_id varchar(200), created_at timestamptz NOT NULL)"
)


class Body(BaseModel):
    network: str
    asset: str
    amount: str
    order_id: str | None = None


def build(database_url: str) -> FastAPI:
    app = FastAPI()
    engine = make_engine(database_url)
    insert = text(f"INSERT INTO {TABLE} VALUES (:id, :network, :asset, :amount, :order_id, :created_at)")

    @app.post("/v1/invoices", status_code=201)
    def create(body: Body) -> dict[str, str | None]:
        row = {"id": "inv_" + secrets.token_hex(10), **body.model_dump(), "created_at": datetime.now(UTC)}
        with engine.begin() as conn:
            conn.execute(insert, row)
        return {**row, "created_at": row["created_at"].isoformat()}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = build(os.environ["PAYWATCH_DATABASE_URL"])
    uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="info")).run()


if __name__ == "__main__":
    main()
