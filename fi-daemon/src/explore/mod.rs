//! Exploration: run a functional test again and again, each time with other faults on
//! the requests it makes, and report which faults it does not survive (docs/EXPLORE.md).

pub mod model;
pub mod report;
pub mod runner;
pub mod search;
pub mod sites;
