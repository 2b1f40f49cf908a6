//! A plan into rules: one rule per planned fault, each selecting exactly the request of its
//! call site in the next run of the test. Pure, so that what an exploration asks of the
//! kernel is unit-tested; the runner hands the specs to the rule engine.

use std::{net::SocketAddr, time::Duration};

use crate::model::{Fault, Plan, PlannedFault, TEST_SOURCE};

/// What one rule must select and do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSpec {
    /// The caller's cgroup.
    pub container: String,
    pub destination: SocketAddr,
    pub method: String,
    /// Exact, or a prefix (`/stock/*`) where the site's path has an `{id}`.
    pub path: String,
    pub fault: Fault,
    /// Requests of the endpoint to let through first: the site's earlier occurrences.
    pub skip_first: Option<u32>,
    /// Every rule injects once.
    pub max_injections: u32,
    /// Expires on its own, should the exploration be stuck.
    pub ttl: Duration,
    pub priority: i32,
    pub description: String,
}

/// What the rules of one run depend on besides the plan.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub exploration: i64,
    /// This run's test cgroup: the test's own calls come from it. A replay's is not the
    /// one the plan was found in (that one is gone).
    pub test_cgroup: &'a str,
    /// How long one run of the test may take.
    pub run_timeout: Duration,
}

/// Margin of a rule's life beyond the run timeout.
const TTL_MARGIN: Duration = Duration::from_secs(60);
/// Priority of exploration rules: above any a user is likely to have.
const BASE_PRIORITY: i32 = 1_000_000;

/// The rules of `plan`, in its order. A later occurrence of the same endpoint gets the
/// higher priority, so that every rule of an endpoint counts every request of it (the
/// first rule that fires ends the evaluation, and a rule that skips counts only the
/// requests it sees).
pub fn compile(plan: &Plan, context: Context<'_>) -> Vec<(PlannedFault, RuleSpec)> {
    plan.0
        .iter()
        .map(|planned| {
            let site = &planned.site;
            let container = if site.source == TEST_SOURCE {
                context.test_cgroup.to_owned()
            } else {
                site.source_cgroup.clone()
            };
            let spec = RuleSpec {
                container,
                destination: site.destination,
                method: site.method.clone(),
                path: site.rule_path(),
                fault: planned.fault,
                skip_first: (site.index > 0).then_some(site.index),
                max_injections: 1,
                ttl: context.run_timeout + TTL_MARGIN,
                priority: BASE_PRIORITY.saturating_add_unsigned(site.index),
                description: format!("exploration {}: {planned}", context.exploration),
            };
            (planned.clone(), spec)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::CallSite;

    fn site(source: &str, path: &str, index: u32) -> CallSite {
        CallSite {
            source: source.into(),
            source_cgroup: format!("/lab/{source}"),
            destination: "10.0.0.4:8080".parse().expect("an address"),
            method: "GET".into(),
            path: path.into(),
            index,
        }
    }

    const CONTEXT: Context<'static> = Context {
        exploration: 7,
        test_cgroup: "/fi.explore-1-7",
        run_timeout: Duration::from_secs(30),
    };

    #[test]
    fn each_fault_selects_its_site_and_nothing_before_it() {
        let plan = Plan::new(vec![
            PlannedFault {
                site: site("orders", "/stock/{id}", 1),
                fault: Fault::Abort(503),
            },
            PlannedFault {
                site: site("orders", "/stock/{id}", 0),
                fault: Fault::Reset,
            },
        ]);
        let rules = compile(&plan, CONTEXT);
        assert_eq!(rules.len(), 2);
        let (first, second) = (&rules[0].1, &rules[1].1);
        assert_eq!(first.fault, Fault::Reset);
        assert_eq!(first.skip_first, None);
        assert_eq!(second.skip_first, Some(1));
        assert!(second.priority > first.priority);
        assert_eq!(first.path, "/stock/*");
        assert_eq!(first.container, "/lab/orders");
        assert_eq!(first.destination.to_string(), "10.0.0.4:8080");
        assert_eq!(first.max_injections, 1);
        assert_eq!(first.ttl, Duration::from_secs(90));
        assert_eq!(
            second.description,
            "exploration 7: abort:503 on orders → GET 10.0.0.4:8080/stock/{id} #2"
        );
    }

    #[test]
    fn the_tests_own_calls_come_from_this_runs_cgroup() {
        let plan = Plan::new(vec![PlannedFault {
            site: site(TEST_SOURCE, "/page", 0),
            fault: Fault::Timeout,
        }]);
        let rules = compile(&plan, CONTEXT);
        assert_eq!(rules[0].1.container, "/fi.explore-1-7");
        assert_eq!(rules[0].1.path, "/page");
    }

    #[test]
    fn the_reference_run_has_no_rules() {
        assert!(compile(&Plan::default(), CONTEXT).is_empty());
    }
}
