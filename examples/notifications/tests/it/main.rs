//! Integration tests of the notifications example: the two services in-process over the memory
//! transport, the real binaries over a real Herald broker, and the two designs side by side.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod designs;
mod in_process;
mod processes;
mod support;
