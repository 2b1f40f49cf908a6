//! Durations and instants as the API carries them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A refused duration field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}: a negative or out-of-range duration")]
pub struct BadDuration(pub &'static str);

/// An optional API duration as a `Duration`, naming `field` if it is negative.
pub fn duration(
    field: &'static str,
    d: Option<prost_types::Duration>,
) -> Result<Option<Duration>, BadDuration> {
    d.map(|d| Duration::try_from(d).map_err(|_| BadDuration(field)))
        .transpose()
}

/// A `Duration` as an API duration (None only past the API's range, ~10^11 years).
pub fn to_api(d: Duration) -> Option<prost_types::Duration> {
    prost_types::Duration::try_from(d).ok()
}

/// Nanoseconds since the Unix epoch (0 before it, saturated after 2262).
pub fn unix_nanos(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}
