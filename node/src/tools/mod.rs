//! Operator tools shipped in the `purgecast` binary but not part of a
//! running node: certificate generation and the local dev cluster.

pub mod certs;
pub mod dev;
mod supervise;
