//! Runnable examples for Nova; see the `examples/` programs. The reference service,
//! [`ticketing`], is a library here so that its scenario and load tests can start it.

pub mod ticketing;
