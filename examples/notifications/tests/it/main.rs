//! Integration tests of the notifications example: the two services in-process over the memory
//! transport, and the real binaries over a real Herald broker.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod in_process;
mod processes;
mod support;
