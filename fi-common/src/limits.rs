//! Sizes that the parser and the rule matcher share (both kernel and user space).

/// Bytes of the request target kept (power of two).
pub const PATH_LEN: usize = 128;
/// Number of configurable captured headers (traceparent, the targeting header, ...).
pub const CAPTURE_SLOTS: usize = 4;
