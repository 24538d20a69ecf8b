//! Durable, crash-safe partition log: segments of Kafka record batches, indexes, recovery, retention.
