//! The in-memory buffer's claim/acknowledge contract and its bounds: the contract suite every
//! buffer passes.

// Test helpers may panic: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use telemetry_buffer::MemoryBuffer;

fn open(capacity: usize) -> Box<MemoryBuffer> {
    Box::new(MemoryBuffer::new(capacity))
}

/// The in-memory buffer has nothing to check beyond what the contract asks through the trait.
fn check(_buffer: &MemoryBuffer) {}

telemetry_testkit::buffer_contract!(open: open, check: check);
