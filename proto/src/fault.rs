//! [`fi_common::fault::Fault`] to and from the API's `Fault` message, the only place the
//! two meet. Validation is the vocabulary's own (one range of abort statuses, one range of
//! delays); this adds only what the wire form can get wrong.

use fi_common::fault::{Fault, FaultError};

use crate::{time, v1 as api};

/// A fault message that does not describe a fault. Each names its field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadFault {
    #[error("fault.kind: unknown value {0}")]
    Kind(i32),
    #[error(transparent)]
    Fault(#[from] FaultError),
    #[error(transparent)]
    Duration(#[from] time::BadDuration),
    #[error("{field}: only for {kind}")]
    OnlyFor {
        field: &'static str,
        kind: &'static str,
    },
}

impl From<Fault> for api::Fault {
    fn from(f: Fault) -> api::Fault {
        let kind = match f {
            Fault::Timeout => api::FaultKind::Timeout,
            Fault::Reset => api::FaultKind::Reset,
            Fault::Refuse => api::FaultKind::Refuse,
            Fault::Abort(_) => api::FaultKind::Abort,
            Fault::ResponseLost => api::FaultKind::ResponseLost,
            Fault::Delay(_) => api::FaultKind::Delay,
        };
        api::Fault {
            kind: kind as i32,
            status: match f {
                Fault::Abort(status) => u32::from(status),
                _ => 0,
            },
            delay: match f {
                Fault::Delay(d) => time::to_api(d),
                _ => None,
            },
        }
    }
}

/// The fault a message describes: `None` for `FAULT_KIND_UNSPECIFIED` (a rule then says
/// which field is missing). A status or delay on a fault that takes none is refused,
/// never ignored.
pub fn from_api(f: &api::Fault) -> Result<Option<Fault>, BadFault> {
    let kind = api::FaultKind::try_from(f.kind).map_err(|_| BadFault::Kind(f.kind))?;
    let delay = time::duration("fault.delay", f.delay)?;
    if kind != api::FaultKind::Abort && f.status != 0 {
        return Err(BadFault::OnlyFor {
            field: "fault.status",
            kind: "abort",
        });
    }
    if kind != api::FaultKind::Delay && delay.is_some() {
        return Err(BadFault::OnlyFor {
            field: "fault.delay",
            kind: "delay",
        });
    }
    Ok(Some(match kind {
        api::FaultKind::Unspecified => return Ok(None),
        api::FaultKind::Timeout => Fault::Timeout,
        api::FaultKind::Reset => Fault::Reset,
        api::FaultKind::Refuse => Fault::Refuse,
        api::FaultKind::ResponseLost => Fault::ResponseLost,
        api::FaultKind::Abort => Fault::abort(f.status)?,
        api::FaultKind::Delay => Fault::delay(delay.ok_or(FaultError::NoDelay)?)?,
    }))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    // Every fault's round trip (text, API, kernel rule, text) is tested in fi-daemon's
    // rule engine, where all four meet: `every_fault_round_trips_from_text_...`.

    #[test]
    fn what_the_wire_can_get_wrong_is_named() {
        let message = |kind: api::FaultKind, status, delay: Option<Duration>| api::Fault {
            kind: kind as i32,
            status,
            delay: delay.and_then(time::to_api),
        };
        assert_eq!(
            from_api(&message(api::FaultKind::Unspecified, 0, None)),
            Ok(None)
        );
        let err = |m: api::Fault| from_api(&m).unwrap_err().to_string();
        assert!(err(message(api::FaultKind::Abort, 100, None)).starts_with("fault.status"));
        assert!(err(message(api::FaultKind::Abort, 0, None)).starts_with("fault.status"));
        assert!(err(message(api::FaultKind::Reset, 503, None)).starts_with("fault.status"));
        assert!(err(message(api::FaultKind::Delay, 0, None)).starts_with("fault.delay"));
        assert!(
            err(message(
                api::FaultKind::Timeout,
                0,
                Some(Duration::from_secs(1))
            ))
            .starts_with("fault.delay")
        );
        assert!(
            err(api::Fault {
                kind: 42,
                ..Default::default()
            })
            .starts_with("fault.kind")
        );
    }
}
