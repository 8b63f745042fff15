//! The node's one wall clock. The protocol engine never reads a clock (it is
//! handed `Time` values); wall-clock milliseconds are for what outlives a
//! process: purge issue times, entry expiry, the last-alive stamp.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch; 0 if the clock is before it.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
