"""A consume-transform-produce processor with confluent-kafka transactions, for the
exactly-once crash test: reads INPUT from the group's committed offsets (read_committed),
writes each value to OUTPUT in a transaction that also commits the input offsets
(send_offsets_to_transaction), and exits 0 printing "done" once the group's committed offsets
cover COUNT records. Any error exits 1: the test starts it again, as a supervisor would.

Usage: eos_processor.py BOOTSTRAP INPUT OUTPUT GROUP TRANSACTIONAL_ID COUNT
Prints "committed N" after each transaction (N = input records covered by committed offsets);
exits 3 when confluent_kafka is not installed.
"""

import sys

try:
    from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
except ImportError:
    print("the Python module confluent_kafka is not installed (pip install confluent-kafka)")
    sys.exit(3)

# Records per transaction, and how long one client call may take before the run gives up.
BATCH_RECORDS_MAX = 2000
CALL_TIMEOUT_S = 20


def main() -> int:
    bootstrap, input_topic, output_topic, group, txn_id, count = sys.argv[1:7]
    count = int(count)
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
    })
    producer = Producer({
        "bootstrap.servers": bootstrap,
        "transactional.id": txn_id,
        "transaction.timeout.ms": 10000,
        "linger.ms": 5,
    })
    # First: this fences the previous processor and ends its transaction (aborted if it was
    # not decided, completed if it was), so the committed offsets read next are final.
    producer.init_transactions(CALL_TIMEOUT_S)
    metadata = consumer.list_topics(input_topic, timeout=CALL_TIMEOUT_S)
    partitions = sorted(metadata.topics[input_topic].partitions)
    assignment = [TopicPartition(input_topic, p) for p in partitions]
    # Assigned, not subscribed: a killed processor leaves no member behind to wait out.
    committed = consumer.committed(assignment, timeout=CALL_TIMEOUT_S)
    consumer.assign([TopicPartition(input_topic, tp.partition, max(tp.offset, 0))
                     for tp in committed])
    # Next offset per partition, as committed; a partition not read yet in this process has
    # no valid position, so it keeps its committed offset.
    offsets = {tp.partition: max(tp.offset, 0) for tp in committed}
    done = sum(offsets.values())
    print(f"committed {done}", flush=True)
    while done < count:
        messages = consumer.consume(BATCH_RECORDS_MAX, timeout=1)
        messages = [m for m in messages if m.error() is None]
        if not messages:
            continue
        producer.begin_transaction()
        for message in messages:
            producer.produce(output_topic, value=message.value(), partition=message.partition())
        positions = [tp for tp in consumer.position(consumer.assignment()) if tp.offset >= 0]
        producer.send_offsets_to_transaction(
            positions, consumer.consumer_group_metadata(), CALL_TIMEOUT_S)
        producer.commit_transaction(CALL_TIMEOUT_S)
        offsets.update({tp.partition: tp.offset for tp in positions})
        done = sum(offsets.values())
        print(f"committed {done}", flush=True)
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KafkaException as error:
        print(f"error {error}", flush=True)
        sys.exit(1)
