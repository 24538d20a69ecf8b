"""Produces messages with confluent-kafka (librdkafka under Python) and consumes them back.

Usage: roundtrip.py BOOTSTRAP TOPIC COUNT
Exits 0 and prints "ok COUNT" when every message came back byte for byte, in order per
partition; exits 3 when confluent_kafka is not installed; otherwise prints what differed.
"""

import sys
import time

try:
    from confluent_kafka import Consumer, Producer, TopicPartition
except ImportError:
    print("the Python module confluent_kafka is not installed (pip install confluent-kafka)")
    sys.exit(3)


def main() -> int:
    bootstrap, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    errors = []

    def on_delivery(err, _msg):
        if err is not None:
            errors.append(str(err))

    producer = Producer({
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
    })
    sent = []
    for i in range(count):
        key = f"key-{i}".encode()
        value = f"value-{i}-".encode() + bytes(range(256))
        headers = [("index", str(i).encode())]
        producer.produce(topic, value=value, key=key, headers=headers, on_delivery=on_delivery)
        producer.poll(0)
        sent.append((key, value, str(i).encode()))
    remaining = producer.flush(30)
    if remaining or errors:
        print(f"produce failed: {remaining} unacknowledged, errors: {errors[:3]}")
        return 1

    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "python-roundtrip",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    })
    metadata = consumer.list_topics(topic, timeout=10)
    partitions = metadata.topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    received = []
    deadline = time.monotonic() + 30
    while len(received) < count and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            print(f"consume failed: {msg.error()}")
            return 1
        headers = dict(msg.headers() or [])
        received.append((msg.key(), msg.value(), headers.get("index")))
    consumer.close()

    if sorted(received) != sorted(sent):
        print(f"mismatch: sent {len(sent)}, received {len(received)}")
        return 1
    print(f"ok {count}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
