#!/usr/bin/env python3
"""Open-loop produce latency with Python's confluent-kafka: an independent client to check the
figures of `herald bench produce` (librdkafka through the rdkafka crate) against.

Message i is due at start + i / rate; its latency is from that due time to its delivery report,
so a stalled broker shows as latency (no coordinated omission). The producer's configuration is
given by flags and printed with the result, as `herald bench produce` does.

    scripts/bench-produce-python.py --bootstrap 127.0.0.1:9092 --topic lat --rate 1000 \
        --count 5000 --acks all --idempotent true --in-flight-max 5 --linger-ms 0
"""

import argparse
import json
import threading
import time

from confluent_kafka import Producer


def percentile(sorted_values, q):
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--topic", default="herald-bench-python")
    parser.add_argument("--rate", type=float, default=1000.0, help="messages per second")
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--size", type=int, default=1024, help="value bytes")
    parser.add_argument("--acks", default="all")
    parser.add_argument("--idempotent", default="true", choices=["true", "false"])
    parser.add_argument("--in-flight-max", type=int, default=5)
    parser.add_argument("--linger-ms", type=int, default=0)
    args = parser.parse_args()

    config = {
        "bootstrap.servers": args.bootstrap,
        "acks": args.acks,
        "enable.idempotence": args.idempotent,
        "max.in.flight.requests.per.connection": args.in_flight_max,
        "linger.ms": args.linger_ms,
    }
    producer = Producer(config)
    value = bytes(args.size)
    latencies_us = []
    failed = [0]

    def report(due):
        def on_delivery(error, _message):
            if error is not None:
                failed[0] += 1
            else:
                latencies_us.append((time.perf_counter() - due) * 1e6)
        return on_delivery

    # Warm up: connection, metadata and the producer id are not measured.
    producer.produce(args.topic, value)
    producer.flush(30)

    # Delivery reports are served by their own thread, blocked in poll until one arrives (poll
    # releases the GIL), so a report is timed when librdkafka has it and the sending loop
    # sleeps between messages instead of spinning: a busy loop here would take a core from
    # the broker and librdkafka on a small machine and measure that instead.
    sending = [True]

    def serve_reports():
        while sending[0] or len(producer) > 0:
            producer.poll(0.05)

    reporter = threading.Thread(target=serve_reports)
    reporter.start()
    start = time.perf_counter()
    lag_us = []
    for i in range(args.count):
        due = start + i / args.rate
        now = time.perf_counter()
        if now < due:
            time.sleep(due - now)
        lag_us.append((time.perf_counter() - due) * 1e6)
        producer.produce(args.topic, value, on_delivery=report(due))
    sending[0] = False
    reporter.join(60)
    producer.flush(60)
    seconds = time.perf_counter() - start

    latencies_us.sort()
    lag_us.sort()
    result = {
        "client": "confluent-kafka %s (librdkafka %s)" % (
            __import__("confluent_kafka").version()[0], __import__("confluent_kafka").libversion()[0]),
        "producer": config,
        "messages": len(latencies_us),
        "failed": failed[0],
        "seconds": round(seconds, 3),
        "msgs_per_s": round(len(latencies_us) / seconds, 1),
        "p50_us": round(percentile(latencies_us, 0.5) or 0),
        "p99_us": round(percentile(latencies_us, 0.99) or 0),
        "p999_us": round(percentile(latencies_us, 0.999) or 0),
        "generator_lag_p99_us": round(percentile(lag_us, 0.99) or 0),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
