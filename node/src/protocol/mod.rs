//! The protocol loop: the driver feeds the sans-IO engine with peer frames,
//! client commands, apply results and timeouts, and carries out its outputs;
//! the apply worker writes purges to the store on a thread of its own.

mod acks;
pub(crate) mod applier;
mod driver;

pub(crate) use driver::{command_channel, Channels, Command, Driver, DriverError, Handle, Parts};
