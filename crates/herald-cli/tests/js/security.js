// kafkajs against a secured herald serve: SASL_SSL with SCRAM-SHA-512, SCRAM-SHA-256 and PLAIN,
// SSL with a client certificate (mTLS), and the failures a user must see clearly.
// Usage: node security.js SASL_SSL_ADDR SSL_ADDR PKI_DIR
// Same broker as security.py: alice (alice-pw) may use `events.*` topics and any group; PKI_DIR
// holds ca.pem, other-ca.pem and alice.pem/alice.key. Prints `ok`; exits 3 when kafkajs is missing.
"use strict";
const fs = require("fs");
const { kafkajs, roundTrip } = require("./common");

const [saslSsl, ssl, pki] = process.argv.slice(2);
const read = (name) => fs.readFileSync(`${pki}/${name}`, "utf8");

function client(broker, options) {
  return new kafkajs.Kafka({
    clientId: "herald-kafkajs-security",
    brokers: [broker],
    logLevel: kafkajs.logLevel.NOTHING,
    connectionTimeout: 5000,
    authenticationTimeout: 5000,
    ...options,
  });
}

const scram = (mechanism, password, ca = "ca.pem") =>
  client(saslSsl, {
    ssl: { ca: [read(ca)] },
    sasl: { mechanism, username: "alice", password },
  });

const mtls = () =>
  client(ssl, { ssl: { ca: [read("ca.pem")], cert: read("alice.pem"), key: read("alice.key") } });

// Runs `action` against a fresh admin of `kafka` (no retries) and returns the error it must fail with.
async function failure(kafka, action) {
  const admin = kafka.admin({ retry: { retries: 0 } });
  try {
    await admin.connect();
    await action(admin);
  } catch (error) {
    return error;
  } finally {
    await admin.disconnect().catch(() => {});
  }
  throw new Error("the call succeeded but must have failed");
}

async function main() {
  await roundTrip(scram("scram-sha-512", "alice-pw"), "events.kafkajs-scram512", 20);
  await roundTrip(scram("scram-sha-256", "alice-pw"), "events.kafkajs-scram256", 5);
  await roundTrip(scram("plain", "alice-pw"), "events.kafkajs-plain", 5);
  await roundTrip(mtls(), "events.kafkajs-mtls", 20);

  const wrongPassword = await failure(scram("scram-sha-512", "wrong"), (admin) => admin.listTopics());
  if (wrongPassword.name !== "KafkaJSSASLAuthenticationError") {
    throw new Error("wrong password: " + wrongPassword.name + ": " + wrongPassword.message);
  }

  const wrongCa = await failure(scram("scram-sha-512", "alice-pw", "other-ca.pem"), (admin) =>
    admin.listTopics()
  );
  if (!/certificate/i.test(String(wrongCa.message) + String(wrongCa.cause))) {
    throw new Error("wrong CA: " + wrongCa.name + ": " + wrongCa.message);
  }

  // alice may not touch topics outside `events.`: the broker answers with Kafka's error code.
  const denied = await failure(mtls(), (admin) =>
    admin.createTopics({ topics: [{ topic: "secret-kafkajs", numPartitions: 1 }] })
  );
  const codes = JSON.stringify(denied.errors || []) + denied.message + (denied.type || "");
  if (!/TOPIC_AUTHORIZATION_FAILED/.test(codes)) {
    throw new Error("creating a forbidden topic: " + denied.name + ": " + codes);
  }

  // Plaintext to the TLS port: the client gets no Kafka answer and gives up with an error.
  const plaintext = await failure(client(ssl, {}), (admin) => admin.listTopics());
  if (!plaintext.name.startsWith("KafkaJS")) throw new Error("plaintext to TLS: " + plaintext);

  // The broker still serves others after all of that.
  await roundTrip(scram("scram-sha-512", "alice-pw"), "events.kafkajs-after", 3);
  console.log("ok");
}

main().catch((error) => {
  console.error(error && error.stack ? error.stack : error);
  process.exit(1);
});
