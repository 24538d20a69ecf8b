//! `herald peer`: brokerless direct, datagram and request/response between processes.
