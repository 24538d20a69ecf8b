#!/usr/bin/env python3
"""Produce throughput of a transactional producer committing every --commit-ms against an
idempotent producer with the same settings (confluent-kafka, acks=all), closed loop: each
sends --count messages of --size bytes as fast as the client takes them, and the time runs
from the first send to the last delivery report (idempotent) or the last commit
(transactional). Prints one JSON object per producer and the ratio.

    scripts/bench-transactions.py --bootstrap 127.0.0.1:9092 --topic txn-bench \
        --count 1000000 --size 100 --commit-ms 100
"""

import argparse
import json
import time

from confluent_kafka import Producer


def run(args, transactional):
    config = {
        "bootstrap.servers": args.bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": args.linger_ms,
        "queue.buffering.max.messages": 1000000,
    }
    if transactional:
        config["transactional.id"] = f"bench-{time.time_ns()}"
    producer = Producer(config)
    failures = []

    def on_delivery(err, _msg):
        if err is not None:
            failures.append(str(err))

    value = b"x" * args.size
    commits = 0
    if transactional:
        producer.init_transactions(30)
        producer.begin_transaction()
    start = time.monotonic()
    last_commit = start
    for i in range(args.count):
        while True:
            try:
                producer.produce(args.topic, value=value, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.001)
        if i % 1000 == 0:
            producer.poll(0)
            now = time.monotonic()
            if transactional and (now - last_commit) * 1000 >= args.commit_ms:
                producer.commit_transaction(30)
                producer.begin_transaction()
                commits += 1
                last_commit = now
    if transactional:
        producer.commit_transaction(30)
        commits += 1
    else:
        producer.flush(60)
    elapsed = time.monotonic() - start
    if failures:
        raise SystemExit(f"{len(failures)} deliveries failed, first: {failures[0]}")
    return {
        "producer": "transactional" if transactional else "idempotent",
        "messages": args.count,
        "size_bytes": args.size,
        "linger_ms": args.linger_ms,
        "commit_ms": args.commit_ms if transactional else None,
        "commits": commits if transactional else None,
        "seconds": round(elapsed, 3),
        "messages_per_s": round(args.count / elapsed),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--topic", default="txn-bench")
    parser.add_argument("--count", type=int, default=1000000)
    parser.add_argument("--size", type=int, default=100, help="value bytes")
    parser.add_argument("--linger-ms", type=int, default=5)
    parser.add_argument("--commit-ms", type=int, default=100)
    args = parser.parse_args()
    idempotent = run(args, False)
    print(json.dumps(idempotent))
    transactional = run(args, True)
    print(json.dumps(transactional))
    ratio = transactional["messages_per_s"] / idempotent["messages_per_s"]
    print(json.dumps({"transactional_over_idempotent": round(ratio, 3)}))


if __name__ == "__main__":
    main()
