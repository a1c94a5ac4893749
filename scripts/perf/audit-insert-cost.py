#!/usr/bin/env python3
"""What one audit row costs SQLite, outside Coffer.

Inserts 60,000 rows shaped like a `secret.resolve` audit event into the
`audit_events` table of migration 6 (WAL, synchronous=NORMAL, as Coffer
opens it), in transactions of --batch rows, and prints the process CPU per
row for each set of secondary indexes, for one hot secret (every row has the
same resource) and for resources spread over 10,000 secrets (what
`coffer bench resolve-many` writes). docs/PERFORMANCE.md quotes it.

    python3 scripts/perf/audit-insert-cost.py [--batch 15] [--rows 60000] [--page-size 4096]
"""

import argparse
import hashlib
import os
import sqlite3
import tempfile
import time
import uuid

TABLE = """CREATE TABLE audit_events (
  tenant text NOT NULL, seq integer NOT NULL, time integer NOT NULL,
  principal text NOT NULL, action text NOT NULL, resource text NOT NULL,
  version integer NOT NULL, consumer_kind text NOT NULL,
  consumer_id text NOT NULL, config_path text NOT NULL, context text NOT NULL,
  outcome text NOT NULL, reason text NOT NULL, request_id text NOT NULL,
  prev_hash text NOT NULL, hash text NOT NULL, PRIMARY KEY (tenant, seq))"""


def rows(count, spread):
    for i in range(count):
        key = f"bench-many-{i * 7919 % 10000:06}" if spread else "bench-hot"
        digest = hashlib.sha256(str(i).encode()).hexdigest()
        yield ("bench-abcdef", i + 1, 1_765_000_000_000_000 + i * 40, "bench",
               "secret.resolve", f"tenants/bench-abcdef/secrets/{key}", 1, "", "",
               "", "{}", "SUCCESS", "", str(uuid.uuid4()), digest, digest)


def cost(indexes, spread, batch, count, page_size):
    with tempfile.TemporaryDirectory() as tmp:
        conn = sqlite3.connect(os.path.join(tmp, "audit.db"), isolation_level=None)
        conn.execute(f"PRAGMA page_size={page_size}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(TABLE)
        for column in indexes:
            conn.execute(f"CREATE INDEX ix_{column} ON audit_events (tenant, {column})")
        data = list(rows(count, spread))
        start = time.process_time()
        for first in range(0, count, batch):
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "INSERT INTO audit_events VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                data[first:first + batch])
            conn.execute("COMMIT")
        spent = time.process_time() - start
        conn.close()
        return spent / count * 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=15)
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--page-size", type=int, default=4096)
    args = parser.parse_args()
    print(f"SQLite {sqlite3.sqlite_version}, {args.rows} rows, {args.batch} a transaction, "
          f"{args.page_size}-byte pages")
    for spread in (False, True):
        for indexes in (["time", "resource", "action"], ["time", "action"], []):
            label = ", ".join(indexes) or "primary key only"
            micros = cost(indexes, spread, args.batch, args.rows, args.page_size)
            where = "10,000 secrets" if spread else "one hot secret"
            print(f"{where:15} {label:25} {micros:5.1f} µs CPU a row")


if __name__ == "__main__":
    main()
