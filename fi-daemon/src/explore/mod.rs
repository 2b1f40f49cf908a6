//! Explorations in the daemon: the parts that touch processes, rules and the store. The
//! logic (model, sites, search, rule compilation, reports) is the pure `fi-explore` crate.
//!
//! - [`lifecycle`]: the service: start, replay, follow, cancel, list, past results;
//! - `handle`: a running exploration's handle (cancel, progress, injected faults), its
//!   mode and its errors;
//! - `records`: the store behind its lock;
//! - `handle`: a running exploration's handle (cancel, progress, injected faults), its
//!   mode and its errors;
//! - `records`: the store behind its lock;
//! - `run`: one exploration's resources and its search loop;
//! - `execution`: one run of the test under one plan;
//! - [`spawn`]: a command in a cgroup, with the tail of its output;
//! - [`netns`]: a container's addresses and listening sockets, to name servers.

mod execution;
mod handle;
pub mod lifecycle;
pub mod netns;
mod records;
mod run;
pub mod spawn;

pub use handle::{ExploreError, InjectedFault, Progress, Running};
pub use lifecycle::{ExploreRequest, Explorer, Followed, Injected};
