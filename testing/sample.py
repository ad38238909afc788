"""A small but realistic application database (used by the demo, the tests and the benchmark)."""

from __future__ import annotations

import random
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

SCHEMA = """
CREATE TABLE customers (
    id INTEGER PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE orders (
    id INTEGER PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES customers(id),
    status TEXT NOT NULL CHECK (status IN ('pending', 'paid', 'shipped', 'cancelled')),
    total_cents INTEGER NOT NULL CHECK (total_cents >= 0),
    created_at TEXT NOT NULL
);
CREATE INDEX orders_customer ON orders(customer_id);
CREATE INDEX orders_created ON orders(created_at);
CREATE TABLE order_items (
    id INTEGER PRIMARY KEY,
    order_id INTEGER NOT NULL REFERENCES orders(id),
    sku TEXT NOT NULL,
    quantity INTEGER NOT NULL CHECK (quantity > 0),
    price_cents INTEGER NOT NULL
);
CREATE INDEX order_items_order ON order_items(order_id);
"""

SCHEMA_VERSION = 3
_FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Ken", "Dennis", "Margaret", "Linus", "Frances"]
_LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Thompson", "Ritchie", "Hamilton", "Torvalds", "Allen"]


def make_sample_database(path: str | Path, *, customers: int = 2000, orders_per_customer: int = 3, seed: int = 7) -> Path:
    """Create an orders database in WAL mode: customers, orders, order_items, user_version 3."""
    path = Path(path)
    rng = random.Random(seed)
    now = datetime.now(UTC).replace(microsecond=0)
    connection = sqlite3.connect(path)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA foreign_keys=ON")
        connection.executescript(SCHEMA)
        connection.executemany(
            "INSERT INTO customers (id, email, name, created_at) VALUES (?, ?, ?, ?)",
            (
                (
                    i,
                    f"customer{i}@example.com",
                    f"{rng.choice(_FIRST)} {rng.choice(_LAST)}",
                    (now - timedelta(days=rng.randint(1, 900))).isoformat(),
                )
                for i in range(1, customers + 1)
            ),
        )
        order_rows, item_rows, item_id = [], [], 0
        for order_id in range(1, customers * orders_per_customer + 1):
            lines = [
                (rng.choice(["A-100", "B-200", "C-300", "D-400"]), rng.randint(1, 5), rng.randint(100, 9000))
                for _ in range(rng.randint(1, 4))
            ]
            total = sum(q * p for _, q, p in lines)
            created = (now - timedelta(minutes=rng.randint(1, 500000))).isoformat()
            order_rows.append(
                (order_id, rng.randint(1, customers), rng.choice(["pending", "paid", "shipped", "cancelled"]), total, created)
            )
            for sku, quantity, price in lines:
                item_id += 1
                item_rows.append((item_id, order_id, sku, quantity, price))
        connection.executemany("INSERT INTO orders VALUES (?, ?, ?, ?, ?)", order_rows)
        connection.executemany("INSERT INTO order_items VALUES (?, ?, ?, ?, ?)", item_rows)
        connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        connection.commit()
    finally:
        connection.close()
    return path
