"""Security checks of a running `herald serve` with Python's confluent-kafka.

Usage: security.py SASL_SSL_ADDR SSL_ADDR PKI_DIR
The broker has users alice (alice-pw, may use topics `events.*` and any group) and admin
(admin-pw, a super user); PKI_DIR holds ca.pem, alice.pem/alice.key (a client certificate whose
common name is alice) and other-ca.pem (a CA nobody used). Prints `ok` when every check passed;
exits 3 when confluent-kafka is missing.
"""
import sys
import uuid

try:
    from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
    from confluent_kafka.admin import (
        AclBinding, AclBindingFilter, AclOperation, AclPermissionType, AdminClient, NewTopic,
        ResourcePatternType, ResourceType, ScramCredentialInfo, ScramMechanism,
        UserScramCredentialUpsertion,
    )
except ImportError:
    print("confluent-kafka is not installed")
    sys.exit(3)

sasl_ssl, ssl, pki = sys.argv[1], sys.argv[2], sys.argv[3]
TIMEOUT = 20


def scram(user, password, ca="ca.pem"):
    return {
        "bootstrap.servers": sasl_ssl,
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": user,
        "sasl.password": password,
        "ssl.ca.location": f"{pki}/{ca}",
        "socket.timeout.ms": 5000,
    }


def mtls(name):
    return {
        "bootstrap.servers": ssl,
        "security.protocol": "SSL",
        "ssl.ca.location": f"{pki}/ca.pem",
        "ssl.certificate.location": f"{pki}/{name}.pem",
        "ssl.key.location": f"{pki}/{name}.key",
        "socket.timeout.ms": 5000,
    }


def round_trip(config, topic, count):
    producer = Producer({**config, "message.timeout.ms": 10000})
    failures = []
    for i in range(count):
        producer.produce(topic, key=b"k", value=f"m{i}".encode(),
                         on_delivery=lambda err, msg: err and failures.append(err))
    producer.flush(TIMEOUT)
    assert not failures, failures
    consumer = Consumer({**config, "group.id": "py-" + uuid.uuid4().hex,
                         "auto.offset.reset": "earliest", "enable.auto.commit": True})
    consumer.subscribe([topic])
    seen = []
    for _ in range(200):
        message = consumer.poll(0.2)
        if message is None:
            if len(seen) >= count:
                break
            continue
        assert message.error() is None, message.error()
        seen.append(message.value())
    consumer.close()
    assert len(seen) == count, seen


def fails(config, what):
    """A metadata request through `config` must fail; returns librdkafka's error text."""
    errors = []
    admin = AdminClient({**config, "error_cb": lambda error: errors.append(str(error))})
    try:
        admin.list_topics(timeout=5)
    except KafkaException as error:
        errors.append(str(error))
    else:
        raise AssertionError(f"{what}: metadata succeeded")
    admin.poll(1)  # serves error_cb with librdkafka's reason
    return " ".join(errors)


round_trip(scram("alice", "alice-pw"), "events.python", 20)
round_trip(mtls("alice"), "events.python-mtls", 20)

message = fails(scram("alice", "wrong"), "wrong password")
assert "Authentication failed" in message or "SASL authentication error" in message, message
fails(scram("alice", "alice-pw", ca="other-ca.pem"), "untrusted server certificate")

# Kafka's admin APIs: ACLs and SCRAM users, as the super user.
admin = AdminClient(scram("admin", "admin-pw"))
for future in admin.create_topics([NewTopic("audit", 1, 1)]).values():
    future.result(TIMEOUT)
binding = AclBinding(ResourceType.TOPIC, "audit", ResourcePatternType.LITERAL, "User:carol", "*",
                     AclOperation.WRITE, AclPermissionType.ALLOW)
for future in admin.create_acls([binding]).values():
    future.result(TIMEOUT)
listed = admin.describe_acls(AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY,
                                              None, None, AclOperation.ANY,
                                              AclPermissionType.ANY)).result(TIMEOUT)
assert binding in listed, listed
upsert = UserScramCredentialUpsertion("carol", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192),
                                      b"carol-pw")
for future in admin.alter_user_scram_credentials([upsert]).values():
    future.result(TIMEOUT)
described = admin.describe_user_scram_credentials(["carol"])["carol"].result(TIMEOUT)
assert described.scram_credential_infos[0].iterations == 8192, described
# Carol can log in and write the topic her new ACL allows, and nothing else.
producer = Producer({**scram("carol", "carol-pw"), "message.timeout.ms": 10000})
outcome = {}
for topic in ["audit", "events.python"]:
    producer.produce(topic, value=b"x",
                     on_delivery=lambda err, msg: outcome.__setitem__(msg.topic(), err))
producer.flush(TIMEOUT)
assert outcome["audit"] is None, outcome
denied = outcome["events.python"]
assert denied is not None and denied.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, outcome
deleted = admin.delete_acls([AclBindingFilter(ResourceType.TOPIC, "audit", ResourcePatternType.ANY,
                                              None, None, AclOperation.ANY,
                                              AclPermissionType.ANY)])
for future in deleted.values():
    assert binding in future.result(TIMEOUT)
print("ok")
