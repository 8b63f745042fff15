//! Operator tools shipped in the `purgecast` binary but not part of a
//! running node: certificate generation, the local dev cluster, the
//! demo/test HTTP origin and API tokens.

pub mod certs;
pub mod dev;
pub mod origin;
mod supervise;
pub mod tokens;
