// What the kafkajs checks share: loading kafkajs (exit 3 when it is missing), a bounded wait,
// and a produce-then-consume round trip through one consumer group.
"use strict";

let kafkajs;
try {
  kafkajs = require("kafkajs");
} catch (error) {
  console.log("kafkajs is not installed: " + error.message);
  process.exit(3);
}

const TIMEOUT_MS = 30000;

// Resolves when `check()` is true, rejects with `what` after TIMEOUT_MS.
async function until(what, check) {
  const deadline = Date.now() + TIMEOUT_MS;
  while (!check()) {
    if (Date.now() > deadline) throw new Error("timed out waiting for " + what);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

// Produces `count` keyed messages to `topic` with an idempotent acks=all producer, then reads
// them back with `consumers` members of one fresh group; every message must arrive exactly once
// (no member sees another's partitions after the group settles, since offsets are committed).
async function roundTrip(kafka, topic, count, consumers = 1) {
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  const messages = [];
  for (let i = 0; i < count; i++) messages.push({ key: "k" + (i % 7), value: "m" + i });
  await producer.send({ topic, acks: -1, messages });
  await producer.disconnect();

  const group = "kafkajs-" + Math.random().toString(16).slice(2);
  const seen = new Map();
  const members = [];
  for (let m = 0; m < consumers; m++) {
    const consumer = kafka.consumer({ groupId: group, sessionTimeout: 10000, heartbeatInterval: 500 });
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: true });
    await consumer.run({
      eachMessage: async ({ message }) => {
        const value = message.value.toString();
        seen.set(value, (seen.get(value) || 0) + 1);
      },
    });
    members.push(consumer);
  }
  await until(`${count} messages of ${topic}`, () => seen.size >= count);
  for (const consumer of members) await consumer.disconnect();
  for (let i = 0; i < count; i++) {
    if (!seen.has("m" + i)) throw new Error(`m${i} of ${topic} never arrived`);
  }
  return group;
}

module.exports = { kafkajs, until, roundTrip, TIMEOUT_MS };
