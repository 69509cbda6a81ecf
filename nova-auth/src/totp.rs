//! Time-based one-time passwords (RFC 6238) for second factors.
