//! Envelope benchmarks against raw aes-gcm (being written).
fn main() {}
