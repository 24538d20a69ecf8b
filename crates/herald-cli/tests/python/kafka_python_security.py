"""kafka-python (a pure-Python Kafka client, no librdkafka) against a secured `herald serve`.

Usage: kafka_python_security.py SASL_SSL_ADDR SSL_ADDR PKI_DIR
Same broker as security.py: alice (alice-pw) may use `events.*` topics and any group; PKI_DIR
holds ca.pem and alice.pem/alice.key. Prints `ok`; exits 3 when kafka-python is missing.
"""
import sys
import uuid

try:
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.errors import KafkaError, NoBrokersAvailable
except ImportError:
    print("kafka-python is not installed")
    sys.exit(3)

sasl_ssl, ssl, pki = sys.argv[1], sys.argv[2], sys.argv[3]


def scram(password):
    return dict(bootstrap_servers=sasl_ssl, security_protocol="SASL_SSL",
                sasl_mechanism="SCRAM-SHA-512", sasl_plain_username="alice",
                sasl_plain_password=password, ssl_cafile=f"{pki}/ca.pem")


def mtls():
    return dict(bootstrap_servers=ssl, security_protocol="SSL", ssl_cafile=f"{pki}/ca.pem",
                ssl_certfile=f"{pki}/alice.pem", ssl_keyfile=f"{pki}/alice.key")


def round_trip(config, topic, count):
    producer = KafkaProducer(**config, acks="all")
    for i in range(count):
        producer.send(topic, key=b"k", value=f"m{i}".encode()).get(timeout=20)
    producer.close()
    consumer = KafkaConsumer(topic, **config, group_id="kp-" + uuid.uuid4().hex,
                             auto_offset_reset="earliest", consumer_timeout_ms=10000)
    seen = []
    for message in consumer:
        seen.append(message.value)
        if len(seen) == count:
            break
    consumer.close()
    assert seen == [f"m{i}".encode() for i in range(count)], seen


round_trip(scram("alice-pw"), "events.kafka-python", 10)
round_trip(mtls(), "events.kafka-python-mtls", 10)
for mechanism in ["PLAIN", "SCRAM-SHA-256"]:
    config = {**scram("alice-pw"), "sasl_mechanism": mechanism}
    round_trip(config, f"events.kafka-python-{mechanism.lower()}", 3)

try:
    KafkaProducer(**scram("wrong"), request_timeout_ms=5000, max_block_ms=5000).send(
        "events.kafka-python", b"x").get(timeout=10)
except (KafkaError, NoBrokersAvailable):
    pass
else:
    raise AssertionError("a wrong password was accepted")
print("ok")
