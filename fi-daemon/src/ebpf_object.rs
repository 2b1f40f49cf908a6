//! The eBPF object (fi-ebpf), embedded at build time by build.rs.

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/fi-ebpf.o"));

/// The embedded eBPF object; `None` when this binary was built without it (plain
/// `cargo build` rather than `cargo xtask build`).
pub fn object() -> Option<&'static [u8]> {
    Some(OBJECT).filter(|o| !o.is_empty())
}
