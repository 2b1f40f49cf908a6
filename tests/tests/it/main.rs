//! The privileged integration tests (tiers 2 and 3) as one binary, a module per area:
//! one link of the daemon instead of one per area (docs/DECISIONS.md has the numbers).

mod bench;
mod control;
mod demo;
mod differential;
mod docs;
mod exact;
mod explore;
mod faults;
mod foundation;
mod prog_test_run;
mod see;
