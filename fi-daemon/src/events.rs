//! Decoding the kernel's ring buffer records into typed events.

use fi_common::event::{
    EVENT_FLOW_CLOSED, EVENT_HELD, EVENT_REQUEST, EVENT_RESPONSE, FlowClosedEvent, HeldEvent,
    RequestEvent, ResponseEvent,
};

/// One record of the ring buffer. Requests dominate the stream, so the size difference
/// between variants costs nothing a box would save.
#[derive(Debug, Clone, PartialEq, Eq)]
#[expect(
    clippy::large_enum_variant,
    reason = "decoded and applied in short batches, never stored"
)]
pub enum KernelEvent {
    Request(RequestEvent),
    Response(ResponseEvent),
    FlowClosed(FlowClosedEvent),
    /// A delayed request packet to put back at its release time.
    Held(Box<HeldEvent>),
}

/// A record that is not an event of this build's programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("event of {len} bytes is too short")]
    TooShort { len: usize },
    #[error("unknown event kind {0}")]
    UnknownKind(u32),
}

/// Copies a `T` out of the front of `bytes` (ring buffer records are only 8-aligned).
fn read<T: Copy>(bytes: &[u8]) -> Result<T, DecodeError> {
    if bytes.len() < size_of::<T>() {
        return Err(DecodeError::TooShort { len: bytes.len() });
    }
    // SAFETY: the length was checked; T is one of fi-common's repr(C) integer-only event
    // types, valid for any bit pattern; read_unaligned makes no alignment assumption.
    Ok(unsafe { bytes.as_ptr().cast::<T>().read_unaligned() })
}

pub fn decode(bytes: &[u8]) -> Result<KernelEvent, DecodeError> {
    let kind: u32 = read(bytes)?;
    match kind {
        EVENT_REQUEST => read(bytes).map(KernelEvent::Request),
        EVENT_RESPONSE => read(bytes).map(KernelEvent::Response),
        EVENT_FLOW_CLOSED => read(bytes).map(KernelEvent::FlowClosed),
        EVENT_HELD => read(bytes).map(|e| KernelEvent::Held(Box::new(e))),
        other => Err(DecodeError::UnknownKind(other)),
    }
}

#[cfg(test)]
mod tests {
    use fi_common::{
        event::EventHeader,
        flow::FlowKey,
        http::{CaptureConfig, parse_request},
    };

    use super::*;

    fn as_bytes<T>(value: &T) -> Vec<u8> {
        // SAFETY: reading the bytes of a plain repr(C) value.
        unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
            .to_vec()
    }

    #[test]
    fn a_request_event_round_trips() {
        let head = parse_request(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n", &CaptureConfig::EMPTY)
            .expect("valid request");
        let event = RequestEvent {
            header: EventHeader {
                kind: EVENT_REQUEST,
                ifindex: 3,
                ts_ns: 42,
                cookie: 7,
                cgroup_id: 99,
                key: FlowKey::default(),
            },
            index: 2,
            rule_id: 0,
            fault: 0,
            _pad: [0; 7],
            head,
        };
        assert_eq!(decode(&as_bytes(&event)), Ok(KernelEvent::Request(event)));
    }

    #[test]
    fn short_and_unknown_records_are_errors() {
        assert_eq!(decode(&[1, 0]), Err(DecodeError::TooShort { len: 2 }));
        assert_eq!(
            decode(&[1, 0, 0, 0, 5]),
            Err(DecodeError::TooShort { len: 5 })
        );
        assert_eq!(
            decode(&[77, 0, 0, 0, 0, 0, 0, 0]),
            Err(DecodeError::UnknownKind(77))
        );
    }
}
