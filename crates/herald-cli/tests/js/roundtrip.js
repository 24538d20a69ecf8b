// kafkajs (a Kafka client written in JavaScript, no librdkafka) against a plaintext herald serve:
// admin, idempotent produce, a two-member consumer group, committed offsets, group description.
// Usage: node roundtrip.js BOOTSTRAP. Prints `ok`; exits 3 when kafkajs is missing.
"use strict";
const { kafkajs, roundTrip } = require("./common");

async function main() {
  const kafka = new kafkajs.Kafka({
    clientId: "herald-kafkajs",
    brokers: [process.argv[2]],
    logLevel: kafkajs.logLevel.NOTHING,
  });
  const admin = kafka.admin();
  await admin.connect();
  const topic = "kafkajs-" + Math.random().toString(16).slice(2);
  if (!(await admin.createTopics({ topics: [{ topic, numPartitions: 3 }], waitForLeaders: true }))) {
    throw new Error("createTopics created nothing");
  }
  const topics = await admin.listTopics();
  if (!topics.includes(topic)) throw new Error("listTopics misses " + topic);
  // kafkajs turns TOPIC_ALREADY_EXISTS into `false`; any other answer throws.
  if (await admin.createTopics({ topics: [{ topic, numPartitions: 3 }] })) {
    throw new Error("creating " + topic + " twice succeeded");
  }

  const group = await roundTrip(kafka, topic, 300, 2);

  const offsets = await admin.fetchOffsets({ groupId: group, topics: [topic] });
  const committed = offsets[0].partitions.reduce((sum, p) => sum + Number(p.offset), 0);
  if (committed !== 300) throw new Error(`committed offsets sum to ${committed}, not 300`);
  const ends = await admin.fetchTopicOffsets(topic);
  const high = ends.reduce((sum, p) => sum + Number(p.high), 0);
  if (high !== 300) throw new Error(`high watermarks sum to ${high}, not 300`);
  const described = await admin.describeGroups([group]);
  if (described.groups[0].groupId !== group) throw new Error("describeGroups: " + JSON.stringify(described));

  await admin.deleteTopics({ topics: [topic] });
  if ((await admin.listTopics()).includes(topic)) throw new Error(topic + " survived deleteTopics");
  await admin.disconnect();
  console.log("ok");
}

main().catch((error) => {
  console.error(error && error.stack ? error.stack : error);
  process.exit(1);
});
