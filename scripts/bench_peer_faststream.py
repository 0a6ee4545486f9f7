"""make bench: a peer's outbox relay beside Relay's, on the same PostgreSQL and broker.

The peer is faststream-outbox (PyPI), installed by scripts/bench.sh into the tools cache, never
into this repository. It runs at its documented defaults with the drain's workload: N messages of
128-byte payloads (decode(repeat(md5(i::text), 8), 'hex')) over 1,000 keys, one Kafka topic. Its
relay handler publishes each row to Kafka with the row's key and awaits the acknowledgement; the
row is deleted once the handler returns. The rate is rows gone from the outbox per second,
from the relay's start to the last row.

Prints one JSON object: {"peer", "version", "messages", "per_sec"}.
"""

import argparse
import asyncio
import json
import time
from importlib.metadata import version

import asyncpg
from faststream import Context
from faststream.kafka import KafkaBroker
from faststream_outbox import OutboxBroker, make_outbox_table
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

QUEUE = "bench"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pg", required=True, help="postgres://user@host:port (no database)")
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()

    database = "relay_bench_peer_faststream"
    admin = await asyncpg.connect(f"{args.pg}/postgres")
    await admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    await admin.execute(f"CREATE DATABASE {database}")
    await admin.close()

    url = args.pg.replace("postgres://", "postgresql+asyncpg://", 1) + f"/{database}"
    engine = create_async_engine(url)
    metadata = MetaData()
    table = make_outbox_table(metadata, table_name="outbox")
    async with engine.begin() as connection:
        await connection.run_sync(metadata.create_all)

    outbox = OutboxBroker(engine, outbox_table=table)
    kafka = KafkaBroker(args.brokers)

    # One row through the library's own publish, to learn the headers it writes; the backlog then
    # goes in with one statement, each row with its key added to those headers.
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    async with sessions() as session, session.begin():
        await outbox.publish(b"x", queue=QUEUE, session=session, headers={"key": "key-0"})
    db = await asyncpg.connect(f"{args.pg}/{database}")
    template = await db.fetchval("SELECT headers::text FROM outbox LIMIT 1")
    await db.execute("DELETE FROM outbox")
    await db.execute(
        """INSERT INTO outbox (queue, payload, headers)
           SELECT $1, decode(repeat(md5(i::text), 8), 'hex'),
                  $2::jsonb || jsonb_build_object('key', 'key-' || (i % 1000))
           FROM generate_series(1, $3::int) AS i""",
        QUEUE,
        template,
        args.messages,
    )
    await db.execute("ANALYZE outbox")

    @outbox.subscriber(QUEUE)
    async def relay(body: bytes, headers: dict = Context("message.headers")) -> None:
        await kafka.publish(body, args.topic, key=headers["key"].encode())

    await kafka.start()
    started = time.monotonic()
    await outbox.start()
    try:
        while True:
            left = await db.fetchval("SELECT count(*) FROM outbox")
            if left == 0:
                break
            if time.monotonic() - started > args.timeout:
                raise SystemExit(f"peer timed out with {left} of {args.messages} rows left")
            await asyncio.sleep(0.05)
        elapsed = time.monotonic() - started
    finally:
        await outbox.stop()
        await kafka.stop()
        await db.close()
        await engine.dispose()
    admin = await asyncpg.connect(f"{args.pg}/postgres")
    await admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    await admin.close()
    print(
        json.dumps(
            {
                "peer": "faststream-outbox",
                "version": version("faststream-outbox"),
                "messages": args.messages,
                "per_sec": args.messages / elapsed,
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
