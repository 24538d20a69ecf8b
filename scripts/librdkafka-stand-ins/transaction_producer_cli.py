#!/usr/bin/env python3
"""Stand-in for librdkafka's tests/java/TransactionProducerCli.java, which librdkafka's test 0098
(consumer side of transactions) runs through java/run-class.sh to produce its transactions with
the Kafka distribution's Java client. This one produces the same records in the same
transactions with confluent-kafka (librdkafka), where the Java client cannot be installed.

Usage: transaction_producer_cli.py BOOTSTRAP COMMAND...

Each command is one argument of comma-separated fields, run in order:
  topic,NAME       the topic of the producer commands that follow
  testid,ID        part of each transactional id: test-transactional-id-ID-PRODUCER
  sleep,MS         sleeps MS milliseconds
  exit,CODE        exits at once with CODE; no producer is closed, so an open transaction stays
                   open and nothing still queued is sent
  PRODUCER,PARTITION,ID_START,COUNT,TYPE,FLUSH
                   PRODUCER is a name starting with "producer"; the first command naming it
                   creates it, transactional unless TYPE is None. COUNT records go to PARTITION
                   (-1: chosen from the key), each with the one-byte key ID_START+i and the
                   value 10 20 30 40 (hex). TYPE: None (no transaction), BeginAbort,
                   BeginCommit, BeginOpen (begin a transaction), ContinueAbort, ContinueCommit,
                   ContinueOpen (use the open one); *Abort and *Commit then end it. FLUSH:
                   DoFlush waits until the records are sent, DontFlush does not.
Numbers are read like Java's Integer.decode (0x10, #10, 010, -1). At the end every producer is
closed as the Java client closes one: queued records are sent and an open transaction aborted.

Exit status: 0 after the last command (or exit's code), 1 when a command or a client call
failed, 3 when confluent_kafka is not installed.
"""

import os
import re
import sys
import time

try:
    from confluent_kafka import KafkaException, Producer
except ImportError:
    print("the Python module confluent_kafka is not installed (pip install confluent-kafka)")
    sys.exit(3)

# The Java client's max.block.ms: how long initTransactions, commitTransaction and
# abortTransaction may block before they fail.
CALL_TIMEOUT_S = 60.0
# Longest wait for queued records to be sent (a Java flush has none; a hang here should fail).
FLUSH_TIMEOUT_S = 120.0
# Longest wait for room in the local queue before one record is given up on.
QUEUE_WAIT_S = 60.0

PAYLOAD = bytes([0x10, 0x20, 0x30, 0x40])
TYPES = (
    "None",
    "BeginAbort",
    "BeginCommit",
    "BeginOpen",
    "ContinueAbort",
    "ContinueCommit",
    "ContinueOpen",
)
FLUSHES = ("DoFlush", "DontFlush")


def java_decode(text):
    """An int read the way Java's Integer.decode reads it."""
    sign, digits = 1, text
    if digits[:1] in "+-" and digits:
        sign, digits = (-1 if digits[0] == "-" else 1), digits[1:]
    if digits[:2] in ("0x", "0X"):
        base, digits = 16, digits[2:]
    elif digits[:1] == "#":
        base, digits = 16, digits[1:]
    elif digits[:1] == "0" and len(digits) > 1:
        base, digits = 8, digits[1:]
    else:
        base = 10
    if not digits or digits[0] in "+-":
        raise ValueError(f"not a number: {text!r}")
    value = sign * int(digits, base)
    if not -(2**31) <= value < 2**31:
        raise ValueError(f"out of the int range: {text!r}")
    return value


def csv_split(text):
    """Fields of a command, as Java's split("\\\\s*,\\\\s*") gives them: trailing empty ones dropped."""
    fields = re.split(r"\s*,\s*", text)
    while fields and fields[-1] == "":
        fields.pop()
    return fields


class TestProducer:
    """One named producer of the Java program, and whether its transaction is open."""

    def __init__(self, bootstrap, testid, name, transactional):
        config = {
            "bootstrap.servers": bootstrap,
            "client.id": ("transactional-producer-" if transactional else "producer-") + name,
            "enable.idempotence": True,
            # The Java client's default partitioner for keyed records: murmur2 of the key.
            "partitioner": "murmur2_random",
            "linger.ms": 5,  # ensure batching, as the Java program sets
        }
        if transactional:
            config["transactional.id"] = f"test-transactional-id-{testid}-{name}"
        self.producer = Producer(config)
        self.in_transaction = False
        if transactional:
            self.producer.init_transactions(CALL_TIMEOUT_S)

    def produce(self, topic, partition, key):
        deadline = time.monotonic() + QUEUE_WAIT_S
        while True:
            try:
                if partition == -1:
                    self.producer.produce(topic, value=PAYLOAD, key=key)
                else:
                    self.producer.produce(topic, value=PAYLOAD, key=key, partition=partition)
                break
            except BufferError:
                if time.monotonic() > deadline:
                    raise
                self.producer.poll(0.1)
        self.producer.poll(0)

    def flush(self):
        left = self.producer.flush(FLUSH_TIMEOUT_S)
        if left:
            raise RuntimeError(f"{left} records still unsent after {FLUSH_TIMEOUT_S} s")

    def make_test_messages(self, topic, partition, id_start, count, kind, flush):
        if kind in ("BeginAbort", "BeginCommit", "BeginOpen"):
            self.producer.begin_transaction()
            self.in_transaction = True
        for i in range(count):
            self.produce(topic, partition, bytes([(i + id_start) & 0xFF]))
        if flush == "DoFlush":
            self.flush()
        if kind in ("BeginAbort", "ContinueAbort"):
            self.producer.abort_transaction(CALL_TIMEOUT_S)
            self.in_transaction = False
        elif kind in ("BeginCommit", "ContinueCommit"):
            self.producer.commit_transaction(CALL_TIMEOUT_S)
            self.in_transaction = False

    def close(self):
        """What the Java client's close() does: send what is queued, abort an open transaction."""
        self.flush()
        if self.in_transaction:
            self.producer.abort_transaction(CALL_TIMEOUT_S)
            self.in_transaction = False


def run(bootstrap, commands):
    producers = {}
    topic = None
    testid = None
    for command in commands:
        cmd = csv_split(command)
        print(f"TransactionProducerCli stand-in: command: '{command}'", flush=True)
        if not cmd:
            raise ValueError(f"Unknown command: {command}")
        if cmd[0] == "sleep":
            time.sleep(java_decode(cmd[1]) / 1000.0)
        elif cmd[0] == "exit":
            sys.stdout.flush()
            os._exit(java_decode(cmd[1]) & 0xFF)
        elif cmd[0] == "topic":
            topic = cmd[1]
        elif cmd[0] == "testid":
            testid = cmd[1]
        elif cmd[0].startswith("producer"):
            if len(cmd) < 6:
                raise ValueError(f"a producer command needs 6 fields: {command}")
            kind, flush = cmd[4], cmd[5]
            if kind not in TYPES:
                raise ValueError(f"No enum constant TransactionType.{kind}")
            if flush not in FLUSHES:
                raise ValueError(f"No enum constant FlushType.{flush}")
            producer = producers.get(cmd[0])
            if producer is None:
                producer = TestProducer(bootstrap, testid, cmd[0], kind != "None")
                producers[cmd[0]] = producer
            producer.make_test_messages(
                topic,
                java_decode(cmd[1]),
                java_decode(cmd[2]),
                java_decode(cmd[3]),
                kind,
                flush,
            )
        else:
            raise ValueError(f"Unknown command: {command}")
    for producer in producers.values():
        producer.close()


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 1
    try:
        run(sys.argv[1], sys.argv[2:])
    except (KafkaException, ValueError, RuntimeError, BufferError, IndexError) as error:
        print(f"TransactionProducerCli stand-in: {error!r}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
