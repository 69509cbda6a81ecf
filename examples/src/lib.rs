//! Runnable examples for Nova; see the `examples/` programs.
