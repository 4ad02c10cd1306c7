//! Forwarding methods.
pub mod dr;
