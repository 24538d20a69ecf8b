// kafkajs transactions against a plaintext herald serve: a committed and an aborted transaction,
// offsets sent to a transaction (sendOffsets), a read_committed consumer that sees exactly the
// committed records, and a second producer with the same transactional id fencing the first.
// Usage: node transactions.js BOOTSTRAP. Prints `ok`; exits 3 when kafkajs is missing.
"use strict";
const { kafkajs, until } = require("./common");

async function main() {
  const kafka = new kafkajs.Kafka({
    clientId: "herald-kafkajs-txn",
    brokers: [process.argv[2]],
    logLevel: kafkajs.logLevel.NOTHING,
  });
  const admin = kafka.admin();
  await admin.connect();
  const suffix = Math.random().toString(16).slice(2);
  const input = "txn-in-" + suffix;
  const output = "txn-out-" + suffix;
  await admin.createTopics({
    topics: [{ topic: input, numPartitions: 1 }, { topic: output, numPartitions: 1 }],
    waitForLeaders: true,
  });
  const group = "txn-group-" + suffix;
  const transactionalId = "txn-" + suffix;

  const producer = kafka.producer({ transactionalId, idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  const values = (prefix, n) => Array.from({ length: n }, (_, i) => `${prefix}-${i}`);

  let txn = await producer.transaction();
  await txn.send({ topic: output, messages: values("commit", 5).map((value) => ({ value })) });
  await txn.commit();

  txn = await producer.transaction();
  await txn.send({ topic: output, messages: values("abort", 5).map((value) => ({ value })) });
  await txn.sendOffsets({ consumerGroupId: group, topics: [{ topic: input, partitions: [{ partition: 0, offset: "9" }] }] });
  await txn.abort();

  txn = await producer.transaction();
  await txn.send({ topic: output, messages: values("offsets", 3).map((value) => ({ value })) });
  await txn.sendOffsets({ consumerGroupId: group, topics: [{ topic: input, partitions: [{ partition: 0, offset: "4" }] }] });
  await txn.commit();

  const offsets = await admin.fetchOffsets({ groupId: group, topics: [input] });
  const committed = offsets[0].partitions.find((p) => p.partition === 0).offset;
  if (committed !== "4") throw new Error(`committed offset is ${committed}, not 4 (the aborted 9 must not count)`);

  // A second producer with the same id fences the first (kafkajs initialises the transactional
  // id at its first transaction).
  const fresh = kafka.producer({ transactionalId, idempotent: true, maxInFlightRequests: 1 });
  await fresh.connect();
  const freshTxn = await fresh.transaction();
  let fenced = false;
  try {
    const zombie = await producer.transaction();
    await zombie.send({ topic: output, messages: [{ value: "zombie" }] });
    await zombie.commit();
  } catch (error) {
    fenced = true;
  }
  if (!fenced) throw new Error("the older producer was not fenced");
  await producer.disconnect().catch(() => {});
  await freshTxn.send({ topic: output, messages: [{ value: "fresh-0" }] });
  await freshTxn.commit();

  const consumer = kafka.consumer({ groupId: "reader-" + suffix, readUncommitted: false });
  await consumer.connect();
  await consumer.subscribe({ topic: output, fromBeginning: true });
  const seen = [];
  await consumer.run({ eachMessage: async ({ message }) => { seen.push(message.value.toString()); } });
  const expected = values("commit", 5).concat(values("offsets", 3), values("fresh", 1));
  await until("the committed records", () => seen.length >= expected.length);
  await fresh.disconnect();
  // The end a read_committed reader may see: every transaction has ended.
  const ends = await admin.fetchTopicOffsets(output);
  await consumer.disconnect();
  if (JSON.stringify(seen) !== JSON.stringify(expected)) {
    throw new Error("read_committed saw " + JSON.stringify(seen) + ", not " + JSON.stringify(expected));
  }
  if (ends.length !== 1) throw new Error("fetchTopicOffsets: " + JSON.stringify(ends));
  await admin.disconnect();
  console.log("ok");
}

main().catch((error) => {
  console.log("failed: " + (error && error.stack ? error.stack : error));
  process.exit(1);
});
