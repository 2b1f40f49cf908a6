//! Bounds the daemon enforces on what a client sends. Clients check them too, to name the
//! field before a message is refused at the transport.

/// Largest request message the daemon decodes: a rule with every field at its longest
/// fits many times over.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Largest message a client accepts: reports of long explorations are read whole.
pub const MAX_REPORT_BYTES: usize = 256 * 1024 * 1024;
/// Longest text a rule matcher or a watch filter may carry (bytes).
pub const MAX_FIELD: usize = 4096;
/// Longest rule description (bytes).
pub const MAX_DESCRIPTION: usize = 1024;
