//! fi's exploration logic, with no I/O: what an exploration is made of ([`model`]), call
//! sites from the requests one run made ([`sites`]), which plan to run next and which to
//! prune ([`search`]), the rules that put a plan into effect ([`compile`]), and what the
//! user reads ([`report`]). The daemon's runner does the rest: processes, rules, the store.
//!
//! A crate of its own so that the compiler keeps it pure: it cannot reach the kernel, the
//! store or the transport, because it does not depend on them.

pub mod compile;
pub mod model;
pub mod path;
pub mod report;
pub mod search;
pub mod sites;
