//! Operator tools shipped in the `purgecast` binary but not part of a
//! running node: certificate generation, the local dev cluster and the
//! demo/test HTTP origin.

pub mod certs;
pub mod dev;
pub mod origin;
mod supervise;
