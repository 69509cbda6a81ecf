//! # nova-policy
//!
//! **Status: not yet implemented.** This crate reserves its place in the Nova workspace and
//! exposes no API yet. When built it will provide authorization for Nova: a policy language with roles, attributes, delegation and explanations, compiled into an indexed evaluator and into SQL predicates for data filtering.
//!
//! See the workspace `README.md` for what is available today.

#![forbid(unsafe_code)]
