"""A confluent-kafka transactional producer commits one transaction and aborts another; a
read_committed consumer must see exactly the committed records and a read_uncommitted one
every record.

Usage: txn_commit_abort.py BOOTSTRAP TOPIC
The transactional id and the readers' group are named after TOPIC, so runs with different
topics on a shared broker never fence or join each other.
Prints "ok" on success; exits 3 when confluent_kafka is not installed; otherwise prints what
differed and exits 1.
"""

import sys

try:
    from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
except ImportError:
    print("the Python module confluent_kafka is not installed (pip install confluent-kafka)")
    sys.exit(3)

CALL_TIMEOUT_S = 30


def read_to_end(bootstrap, topic, isolation):
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"{topic}-reader",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "isolation.level": isolation,
    })
    consumer.assign([TopicPartition(topic, 0, 0)])
    values = []
    for _ in range(CALL_TIMEOUT_S * 10):
        message = consumer.poll(0.1)
        if message is None:
            continue
        if message.error():
            if message.error().code() == KafkaError._PARTITION_EOF:
                consumer.close()
                return values
            raise SystemExit(f"consume failed: {message.error()}")
        values.append(message.value().decode())
    raise SystemExit(f"no end of {topic} after {values}")


def main() -> int:
    bootstrap, topic = sys.argv[1], sys.argv[2]
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"{topic}-txn"})
    producer.init_transactions(CALL_TIMEOUT_S)
    for prefix, commit in (("kept", True), ("dropped", False), ("also", True)):
        producer.begin_transaction()
        for i in range(5):
            producer.produce(topic, value=f"{prefix}-{i}", partition=0)
        if commit:
            producer.commit_transaction(CALL_TIMEOUT_S)
        else:
            producer.flush(CALL_TIMEOUT_S)
            producer.abort_transaction(CALL_TIMEOUT_S)
    committed = read_to_end(bootstrap, topic, "read_committed")
    expected = [f"kept-{i}" for i in range(5)] + [f"also-{i}" for i in range(5)]
    if committed != expected:
        print(f"read_committed saw {committed}, not {expected}")
        return 1
    everything = read_to_end(bootstrap, topic, "read_uncommitted")
    if len(everything) != 15:
        print(f"read_uncommitted saw {len(everything)} records, not 15: {everything}")
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
