//! Types and pure logic shared by fi's eBPF programs (`fi-ebpf`) and its daemon.
//!
//! Everything here compiles for `bpfel-unknown-none` (where the crate is `no_std`) and for
//! the host, so that the logic the kernel runs is unit-tested on the host. Wire types are
//! `#[repr(C)]`, `Copy`, explicit-width and padding-free, with a size assertion each.
#![cfg_attr(target_arch = "bpf", no_std)]

pub mod counters;
#[cfg(feature = "user")]
pub mod csum;
pub mod digest;
pub mod event;
#[cfg(not(target_arch = "bpf"))]
pub mod fault;
pub mod flow;
pub mod framing;
pub mod http;
pub mod limits;
pub mod maps;
pub mod rule;
pub mod stream;
#[cfg(feature = "user")]
pub mod user;
