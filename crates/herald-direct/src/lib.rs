//! Brokerless delivery: direct (acked, TCP) and datagram (UDP) pub/sub, request/response, discovery.
