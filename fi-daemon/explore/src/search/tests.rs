//! The search against a simulated system: test -> gateway -> orders -> stock, where
//! orders retries stock once and the gateway falls back to a cache when orders fails.

use std::collections::BTreeSet;

use super::*;

const T: &str = "test";

fn site(source: &str, dest: &str, path: &str, index: u32) -> CallSite {
    CallSite {
        source: source.into(),
        source_cgroup: format!("lab/{source}"),
        destination: dest.parse().expect("an ip:port"),
        method: "GET".into(),
        path: path.into(),
        index,
    }
}

fn gw() -> CallSite {
    site(T, "10.0.0.2:80", "/page", 0)
}
fn orders() -> CallSite {
    site("gateway", "10.0.0.3:80", "/orders", 0)
}
fn stock(i: u32) -> CallSite {
    site("orders", "10.0.0.4:80", "/stock", i)
}
fn cache() -> CallSite {
    site("gateway", "10.0.0.5:80", "/cache", 0)
}

/// How the simulated system behaves. `trusts_direct_503`: whether the gateway treats a
/// kernel-made 503 like a real one (false breaks reduction's assumption on purpose).
struct System {
    trusts_direct_503: bool,
}

impl System {
    /// Runs the test under `plan`: the calls in the order they started, and the outcome.
    fn run(&self, plan: &Plan) -> (Outcome, Vec<SiteCall>) {
        let ok_200 = Response::Status { status: 200 };
        let injected = |site: &CallSite| plan.0.iter().find(|f| &f.site == site).map(|f| f.fault);
        let answer = |site: &CallSite, real: Response| match injected(site) {
            None | Some(Fault::Delay(_)) => real,
            Some(Fault::Abort(status)) => Response::Status { status },
            Some(_) => Response::None,
        };
        let mut started: Vec<(CallSite, Option<CallSite>)> = vec![(gw(), None)];
        let mut answers: Vec<Response> = Vec::new();
        let page = if injected(&gw()).is_some() {
            answer(&gw(), ok_200)
        } else {
            started.push((orders(), Some(gw())));
            let orders_real = if injected(&orders()).is_some() {
                ok_200 // never reached: the kernel answers
            } else {
                started.push((stock(0), Some(orders())));
                let first = answer(&stock(0), ok_200);
                answers.push(first);
                if first == ok_200 {
                    ok_200
                } else {
                    started.push((stock(1), Some(orders())));
                    let second = answer(&stock(1), ok_200);
                    answers.push(second);
                    if second == ok_200 {
                        ok_200
                    } else {
                        Response::Status { status: 503 }
                    }
                }
            };
            let from_orders = answer(&orders(), orders_real);
            let direct = injected(&orders()).is_some();
            let page = if from_orders == ok_200 || (!self.trusts_direct_503 && direct) {
                ok_200
            } else if !self.trusts_direct_503 {
                // The buggy model: a real 503 is not handled at all.
                Response::Status { status: 502 }
            } else {
                started.push((cache(), Some(gw())));
                if answer(&cache(), ok_200) == ok_200 {
                    ok_200
                } else {
                    Response::Status { status: 502 }
                }
            };
            answer(&gw(), page)
        };
        let calls = started
            .into_iter()
            .map(|(site, parent)| {
                let real = if site == gw() { page } else { ok_200 };
                let response = match (&site, injected(&site)) {
                    (s, None) if *s == orders() => {
                        // What orders really answered: 503 when both stock calls failed.
                        if answers.len() == 2 && answers[1] != ok_200 {
                            Response::Status { status: 503 }
                        } else {
                            ok_200
                        }
                    }
                    (s, None) if *s == gw() => page,
                    _ => answer(&site, real),
                };
                SiteCall {
                    injected: injected(&site),
                    site,
                    raw_path: String::new(),
                    response,
                    latency_us: 1,
                    parent,
                }
            })
            .collect();
        let outcome = if page == ok_200 {
            Outcome::Passed
        } else {
            Outcome::Failed { exit_code: 1 }
        };
        (outcome, calls)
    }
}

struct Summary {
    runs: u32,
    pruned: Vec<(Plan, Plan)>,
    failing: BTreeSet<Plan>,
    notes: Vec<String>,
    order: Vec<Plan>,
}

fn explore(system: &System, faults: &[Fault], reduction: bool, max: u32) -> Summary {
    explore_with(system, faults, reduction, max, true)
}

fn explore_with(
    system: &System,
    faults: &[Fault],
    reduction: bool,
    max: u32,
    test_requests: bool,
) -> Summary {
    let mut search = Search::new(SearchConfig {
        faults: faults.to_vec(),
        reduction,
        max_executions: max,
        test_requests,
    });
    let mut summary = Summary {
        runs: 0,
        pruned: Vec::new(),
        failing: BTreeSet::new(),
        notes: Vec::new(),
        order: Vec::new(),
    };
    let mut number = 0;
    while let Some(next) = search.next_step() {
        match next {
            Next::Run(plan) => {
                let (outcome, calls) = system.run(&plan);
                summary.runs += 1;
                if outcome.is_failure() {
                    summary.failing.insert(plan.clone());
                }
                summary.order.push(plan.clone());
                summary
                    .notes
                    .extend(search.record(&plan, number, &outcome, &calls));
                number += 1;
            }
            Next::Prune(plan, pruned) => summary.pruned.push((plan, pruned.equivalent)),
        }
    }
    summary
}

const TWO: [Fault; 2] = [Fault::Reset, Fault::Abort(503)];

#[test]
fn reference_first_then_each_fault_on_each_site_in_call_order() {
    let s = explore(
        &System {
            trusts_direct_503: true,
        },
        &TWO,
        false,
        1000,
    );
    assert!(s.order[0].is_reference());
    // The page is requested first, then orders, then stock: singles follow that order,
    // each plan's revealed calls explored right after it (depth first).
    let singles: Vec<String> = s.order[1..]
        .iter()
        .filter(|p| p.0.len() == 1)
        .map(ToString::to_string)
        .collect();
    let expected: Vec<String> = [gw(), orders(), stock(0)]
        .iter()
        .flat_map(|site| TWO.iter().map(move |f| format!("{f} on {site}")))
        .collect();
    assert_eq!(singles, expected);
    let second = s
        .order
        .iter()
        .position(|p| p.to_string() == expected[3])
        .unwrap();
    // After abort:503 on orders, the cache call it revealed gets its faults first.
    assert_eq!(s.order[second + 1].0.len(), 2);
    assert!(s.order[second + 1].faults_site(&cache()));
}

#[test]
fn revealed_retries_and_fallbacks_get_one_more_fault() {
    let s = explore(
        &System {
            trusts_direct_503: true,
        },
        &TWO,
        false,
        1000,
    );
    // reset on stock #1 then reveals the retry, which gets each fault in turn.
    let retry_plan = Plan::new(vec![
        PlannedFault {
            site: stock(0),
            fault: Fault::Reset,
        },
        PlannedFault {
            site: stock(1),
            fault: Fault::Reset,
        },
    ]);
    assert!(s.order.contains(&retry_plan));
    // ... and with both failing, orders answers 503, the gateway calls the cache: faults
    // on the cache on top of that.
    let three = retry_plan.with(PlannedFault {
        site: cache(),
        fault: Fault::Reset,
    });
    assert!(s.order.contains(&three));
    assert!(s.failing.contains(&three));
    // Each plan runs at most once.
    let unique: BTreeSet<&Plan> = s.order.iter().collect();
    assert_eq!(unique.len(), s.order.len());
}

#[test]
fn reduction_runs_fewer_and_predicts_the_same_failures() {
    let system = System {
        trusts_direct_503: true,
    };
    let full = explore(&system, &TWO, false, 1000);
    let reduced = explore(&system, &TWO, true, 1000);
    assert!(full.pruned.is_empty());
    assert!(
        reduced.runs < full.runs,
        "with reduction {} runs, without {}",
        reduced.runs,
        full.runs
    );
    assert_eq!(
        reduced.runs as usize + reduced.pruned.len(),
        full.runs as usize
    );
    // Every pruned plan's equivalent ran, and the failures found or predicted are
    // exactly those of the full search.
    let mut found = reduced.failing.clone();
    for (plan, equivalent) in &reduced.pruned {
        assert!(reduced.order.contains(equivalent), "{equivalent} never ran");
        if reduced.failing.contains(equivalent) {
            found.insert(plan.clone());
        }
    }
    assert_eq!(found, full.failing);
    assert!(
        reduced.notes.iter().any(|n| n.contains("same outcome")),
        "{:?}",
        reduced.notes
    );
}

#[test]
fn a_wrong_equivalence_is_noticed_and_dropped() {
    let system = System {
        trusts_direct_503: false,
    };
    let reduced = explore(&system, &TWO, true, 1000);
    assert!(
        reduced
            .notes
            .iter()
            .any(|n| n.contains("ended differently")),
        "{:?}",
        reduced.notes
    );
}

#[test]
fn max_executions_stops_the_search() {
    let mut search = Search::new(SearchConfig {
        faults: TWO.to_vec(),
        reduction: false,
        max_executions: 3,
        test_requests: true,
    });
    let system = System {
        trusts_direct_503: true,
    };
    let mut runs = 0;
    while let Some(Next::Run(plan)) = search.next_step() {
        let (outcome, calls) = system.run(&plan);
        search.record(&plan, runs, &outcome, &calls);
        runs += 1;
    }
    assert_eq!(runs, 3);
    assert!(search.truncated());
}

#[test]
fn a_post_repeated_after_a_lost_response_is_noted() {
    let charge = CallSite {
        method: "POST".into(),
        ..site("shop", "10.0.0.9:80", "/charge", 0)
    };
    let mut search = Search::new(SearchConfig {
        faults: vec![Fault::ResponseLost],
        reduction: true,
        max_executions: 10,
        test_requests: true,
    });
    let reference_call = SiteCall {
        site: charge.clone(),
        raw_path: "/charge".into(),
        response: Response::Status { status: 200 },
        latency_us: 1,
        parent: None,
        injected: None,
    };
    let Some(Next::Run(reference)) = search.next_step() else {
        panic!("no reference run")
    };
    search.record(
        &reference,
        0,
        &Outcome::Passed,
        std::slice::from_ref(&reference_call),
    );
    let Some(Next::Run(lost)) = search.next_step() else {
        panic!("no faulted run")
    };
    let retry = SiteCall {
        site: CallSite {
            index: 1,
            ..charge.clone()
        },
        ..reference_call.clone()
    };
    let notes = search.record(&lost, 1, &Outcome::Passed, &[reference_call, retry]);
    assert!(
        notes.iter().any(|n| n.contains("sent 2 times")),
        "{notes:?}"
    );
}

#[test]
fn the_tests_own_calls_are_left_alone_unless_asked() {
    let system = System {
        trusts_direct_503: true,
    };
    let touches_test = |s: &Summary| s.order.iter().any(|p| p.faults_site(&gw()));
    let without = explore_with(&system, &TWO, false, 500, false);
    assert!(!touches_test(&without), "{:?}", without.order);
    assert!(
        without.runs > 1,
        "the calls behind the entry point are explored"
    );
    let with = explore_with(&system, &TWO, false, 500, true);
    assert!(touches_test(&with));
    assert_eq!(with.runs, without.runs + TWO.len() as u32);
}

#[test]
fn an_answer_after_a_wait_is_not_taken_as_an_immediate_abort() {
    let mut search = Search::new(SearchConfig {
        faults: vec![Fault::Timeout, Fault::Abort(503)],
        reduction: true,
        max_executions: 100,
        test_requests: true,
    });
    let call = |site: CallSite, parent: Option<CallSite>, status: u16, latency_us: u64| SiteCall {
        injected: None,
        site,
        raw_path: String::new(),
        response: Response::Status { status },
        latency_us,
        parent,
    };
    let reference = Plan::new(Vec::new());
    let calls = [
        call(gw(), None, 200, 1_000),
        call(orders(), Some(gw()), 200, 1_000),
        call(stock(0), Some(orders()), 200, 500),
    ];
    let _ = search.next_step();
    search.record(&reference, 0, &Outcome::Passed, &calls);
    // A timeout on stock: orders answers 503, but only after its own 5 s deadline.
    let timeout_on_stock = Plan::new(vec![PlannedFault {
        site: stock(0),
        fault: Fault::Timeout,
    }]);
    let calls = [
        call(gw(), None, 503, 5_002_000),
        call(orders(), Some(gw()), 503, 5_001_000),
        call(stock(0), Some(orders()), 0, 0),
    ];
    let notes = search.record(
        &timeout_on_stock,
        1,
        &Outcome::Failed { exit_code: 1 },
        &calls,
    );
    assert!(
        !notes.iter().any(|n| n.contains("the same as")),
        "a 503 after a wait was taken as abort:503: {notes:?}"
    );
    assert!(search.learned.is_empty());
}
