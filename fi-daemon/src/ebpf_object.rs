//! The eBPF object (fi-ebpf), embedded at build time by build.rs.

use crate::dataplane::DataPlaneError;

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/fi-ebpf.o"));

/// The embedded eBPF object, or an error that says how to build it when this binary was
/// built without it (plain `cargo build` rather than `cargo xtask build`).
pub fn object() -> Result<&'static [u8], DataPlaneError> {
    if OBJECT.is_empty() {
        Err(DataPlaneError::ObjectNotBuilt)
    } else {
        Ok(OBJECT)
    }
}
