//! aya `Pod` impls, so that user space can read and write these types in maps.

use crate::{
    flow::{FlowKey, FlowState},
    http::CaptureConfig,
    rule::{AbortResponse, Rule, RuleStats},
};

// SAFETY: each is #[repr(C)], Copy, made of integers and arrays of integers, with explicit
// padding fields, so every bit pattern is valid and there are no uninitialized bytes (each
// type's size assertion, the sum of its fields, proves there is no implicit padding).
unsafe impl aya::Pod for FlowKey {}
// SAFETY: as above.
unsafe impl aya::Pod for FlowState {}
// SAFETY: as above.
unsafe impl aya::Pod for CaptureConfig {}
// SAFETY: as above.
unsafe impl aya::Pod for Rule {}
// SAFETY: as above.
unsafe impl aya::Pod for RuleStats {}
// SAFETY: as above.
unsafe impl aya::Pod for AbortResponse {}
