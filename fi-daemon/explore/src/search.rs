//! The search: which plan to run next, Filibuster-style, with dynamic reduction.
//!
//! Pure logic, no I/O: the runner asks [`Search::next_step`] for a plan, runs the test under
//! it, and hands the requests it saw back with [`Search::record`].
//!
//! - The reference run (no fault) finds the call sites; each gets one execution per fault
//!   of the fault set, in the order the calls were made.
//! - An execution that reveals call sites its origin did not make (a retry, a fallback)
//!   schedules its plan plus one more fault on each of them, depth first. Plans are sets:
//!   each runs at most once.
//! - Reduction: when faults injected below a call P (on the requests P's server made while
//!   serving it) show up at P's caller only as a status that the fault set injects
//!   directly (P answered 503, and `abort:503` is in the set), the caller cannot tell them
//!   from `abort:503` on P. Any plan that contains them, and nothing else below P, is then
//!   equivalent to the plan with `abort:503` on P instead; if that plan has run or is
//!   scheduled, this one is pruned with that reason. The assumption (a caller's behaviour
//!   depends only on the responses it gets) is checked whenever both forms were run.

use std::collections::{HashMap, HashSet};

use crate::model::{
    CallSite, Fault, Outcome, Plan, PlannedFault, Pruned, Response, SiteCall, TEST_SOURCE,
};

/// Above this latency (µs), an answer that took `usual` in the reference run is in
/// another timing class: twice as slow and 100 ms more.
fn slow_after(usual: u64) -> u64 {
    usual.saturating_mul(2).saturating_add(100_000)
}

/// What the user asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchConfig {
    pub faults: Vec<Fault>,
    pub reduction: bool,
    /// Executions to run at most, the reference run included.
    pub max_executions: u32,
    /// Whether the test's own calls (source [`TEST_SOURCE`]) get faults too.
    pub test_requests: bool,
}

/// The next step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    Run(Plan),
    /// Not run, for this reason; record it as it is.
    Prune(Plan, Pruned),
}

/// A learned equivalence: `below` (faults on calls made while serving `at`) made `at`'s
/// caller see exactly what `direct` injects.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Equivalence {
    below: Vec<PlannedFault>,
    direct: PlannedFault,
    /// The execution that showed it.
    learned_from: u32,
    answer: Response,
}

/// The search state.
#[derive(Debug)]
pub struct Search {
    config: SearchConfig,
    /// Pending plans with the plan whose execution scheduled them; popped from the end.
    stack: Vec<(Plan, Plan)>,
    /// Every plan scheduled, run or pruned.
    known: HashSet<Plan>,
    /// Sites each executed plan made calls to, to tell what is new.
    sites_of: HashMap<Plan, HashSet<CallSite>>,
    /// Executed plans: their number and outcome.
    results: HashMap<Plan, (u32, Outcome)>,
    reference: HashMap<CallSite, Response>,
    /// How long each call of the reference run took (µs): its timing class.
    reference_latency: HashMap<CallSite, u64>,
    learned: Vec<Equivalence>,
    /// Learned equivalences found wrong (both forms run, different outcomes).
    violated: HashSet<usize>,
    runs: u32,
    started: bool,
}

impl Search {
    pub fn new(config: SearchConfig) -> Search {
        Search {
            config,
            stack: Vec::new(),
            known: HashSet::new(),
            sites_of: HashMap::new(),
            results: HashMap::new(),
            reference: HashMap::new(),
            reference_latency: HashMap::new(),
            learned: Vec::new(),
            violated: HashSet::new(),
            runs: 0,
            started: false,
        }
    }

    /// Plans scheduled and not yet run or pruned.
    pub fn pending(&self) -> usize {
        self.stack.len() + usize::from(!self.started)
    }

    /// Executions run so far.
    pub fn runs(&self) -> u32 {
        self.runs
    }

    /// Whether the search stopped at `max_executions` with plans left.
    pub fn truncated(&self) -> bool {
        self.runs >= self.config.max_executions && !self.stack.is_empty()
    }

    /// The next plan to run or prune; `None` when done (or at `max_executions`).
    pub fn next_step(&mut self) -> Option<Next> {
        if !self.started {
            self.started = true;
            self.known.insert(Plan::default());
            self.runs += 1;
            return Some(Next::Run(Plan::default()));
        }
        if self.runs >= self.config.max_executions {
            return None;
        }
        let (plan, _origin) = self.stack.last()?.clone();
        if self.config.reduction
            && let Some(pruned) = self.prune(&plan)
        {
            self.stack.pop();
            return Some(Next::Prune(plan, pruned));
        }
        self.runs += 1;
        Some(Next::Run(plan))
    }

    /// What the execution of `plan` (numbered `number`) showed. Returns notes for the
    /// report (equivalences found, non-idempotent requests repeated...).
    pub fn record(
        &mut self,
        plan: &Plan,
        number: u32,
        outcome: &Outcome,
        calls: &[SiteCall],
    ) -> Vec<String> {
        let origin = match self.stack.last() {
            Some((top, origin)) if top == plan => {
                let origin = origin.clone();
                self.stack.pop();
                Some(origin)
            }
            _ => None,
        };
        let sites: HashSet<CallSite> = calls.iter().map(|c| c.site.clone()).collect();
        let mut notes = Vec::new();
        if plan.is_reference() {
            for call in calls {
                self.reference.insert(call.site.clone(), call.response);
                self.reference_latency
                    .insert(call.site.clone(), call.latency_us);
            }
            self.schedule(plan, calls.iter().map(|c| &c.site));
        } else {
            let before = origin
                .as_ref()
                .and_then(|o| self.sites_of.get(o))
                .cloned()
                .unwrap_or_default();
            let new: Vec<&CallSite> = calls
                .iter()
                .map(|c| &c.site)
                .filter(|s| !before.contains(*s) && !plan.faults_site(s))
                .collect();
            self.schedule(plan, new.into_iter());
            notes.extend(self.learn(plan, number, calls));
            notes.extend(self.repeated_after_lost_response(plan, calls));
        }
        self.sites_of.insert(plan.clone(), sites);
        self.results.insert(plan.clone(), (number, outcome.clone()));
        notes.extend(self.check_equivalence(plan, number, outcome));
        notes
    }

    /// The outcome of an executed plan.
    pub fn result(&self, plan: &Plan) -> Option<&(u32, Outcome)> {
        self.results.get(plan)
    }

    fn schedule<'a>(&mut self, plan: &Plan, sites: impl Iterator<Item = &'a CallSite>) {
        let mut fresh = Vec::new();
        let sites = sites.filter(|s| self.config.test_requests || s.source != TEST_SOURCE);
        for site in sites {
            for fault in &self.config.faults {
                let candidate = plan.with(PlannedFault {
                    site: site.clone(),
                    fault: *fault,
                });
                if self.known.insert(candidate.clone()) {
                    fresh.push(candidate);
                }
            }
        }
        // Pushed in reverse so that they pop in the order the calls were made.
        for candidate in fresh.into_iter().rev() {
            self.stack.push((candidate, plan.clone()));
        }
    }

    /// Learns equivalences from an execution: for each call P that was not faulted but
    /// had faulted calls below it, if P's caller got a status the fault set injects (and
    /// the reference did not), the faults below P equal `abort<status>` on P.
    fn learn(&mut self, plan: &Plan, number: u32, calls: &[SiteCall]) -> Vec<String> {
        let mut below: HashMap<&CallSite, Vec<PlannedFault>> = HashMap::new();
        for call in calls {
            if let Some(parent) = &call.parent
                && let Some(fault) = plan.0.iter().find(|f| f.site == call.site)
            {
                below.entry(parent).or_default().push(fault.clone());
            }
        }
        let mut notes = Vec::new();
        for (parent, faults) in below {
            // A test may assert differently when a fault hit its own request (as
            // Filibuster's was_fault_injected() lets it): kernel-made answers to the test
            // are never taken as equivalent to real ones.
            if plan.faults_site(parent) || parent.source == TEST_SOURCE {
                continue;
            }
            let Some(call) = calls.iter().find(|c| &c.site == parent) else {
                continue;
            };
            let answer = call.response;
            // The timing class: an abort on P answers at once. An answer that came only
            // after a wait (a timeout or a delay below P, or just much slower than in the
            // reference) is not the same to P's caller, whose own deadline may run out.
            let waited_below = faults
                .iter()
                .any(|f| matches!(f.fault, Fault::Timeout | Fault::Delay(_)));
            let usual = self.reference_latency.get(parent).copied().unwrap_or(0);
            if waited_below || call.latency_us > slow_after(usual) {
                continue;
            }
            let Response::Status { status } = answer else {
                continue;
            };
            let direct_fault = Fault::Abort(status);
            if self.reference.get(parent) == Some(&answer)
                || !self.config.faults.contains(&direct_fault)
            {
                continue;
            }
            let direct = PlannedFault {
                site: parent.clone(),
                fault: direct_fault,
            };
            let mut faults = faults;
            faults.sort();
            let equivalence = Equivalence {
                below: faults,
                direct,
                learned_from: number,
                answer,
            };
            let already = self
                .learned
                .iter()
                .any(|l| l.below == equivalence.below && l.direct == equivalence.direct);
            if !already {
                notes.push(format!(
                    "{} answered {} to {}: the same as {}",
                    parent.destination, answer, parent.source, equivalence.direct
                ));
                self.learned.push(equivalence);
            }
        }
        notes
    }

    /// Applies learned equivalences until none applies: the simplest equivalent plan.
    fn reduce(&self, plan: &Plan) -> Option<(Plan, Vec<usize>)> {
        let mut current = plan.clone();
        let mut used = Vec::new();
        'again: loop {
            for (i, eq) in self.learned.iter().enumerate() {
                if self.violated.contains(&i) || used.contains(&i) {
                    continue;
                }
                let contains_all = eq.below.iter().all(|f| current.0.contains(f));
                if !contains_all || current.faults_site(&eq.direct.site) {
                    continue;
                }
                let mut faults: Vec<PlannedFault> = current
                    .0
                    .iter()
                    .filter(|f| !eq.below.contains(f))
                    .cloned()
                    .collect();
                // Other faults below the same call could change its answer: only a plan
                // with exactly these faults below it is equivalent.
                let parent_of = |site: &CallSite| self.parent_in_learning(site);
                if faults
                    .iter()
                    .any(|f| parent_of(&f.site).as_ref() == Some(&eq.direct.site))
                {
                    continue;
                }
                faults.push(eq.direct.clone());
                current = Plan::new(faults);
                used.push(i);
                continue 'again;
            }
            break;
        }
        (current != *plan).then_some((current, used))
    }

    /// The parent of a site, as any learned equivalence showed it (faulted sites only).
    fn parent_in_learning(&self, site: &CallSite) -> Option<CallSite> {
        self.learned
            .iter()
            .find(|eq| eq.below.iter().any(|f| &f.site == site))
            .map(|eq| eq.direct.site.clone())
    }

    fn prune(&self, plan: &Plan) -> Option<Pruned> {
        let (equivalent, used) = self.reduce(plan)?;
        if !self.known.contains(&equivalent) || equivalent == *plan {
            return None;
        }
        let because: Vec<String> = used
            .iter()
            .map(|&i| {
                let eq = &self.learned[i];
                let below: Vec<String> = eq.below.iter().map(ToString::to_string).collect();
                format!(
                    "under {} the caller saw {} (execution #{}), which {} injects directly",
                    below.join(" + "),
                    eq.answer,
                    eq.learned_from,
                    eq.direct
                )
            })
            .collect();
        Some(Pruned {
            reason: format!("equivalent to [{equivalent}]: {}", because.join("; ")),
            equivalent,
        })
    }

    /// When a plan was run and its reduced form was run too, their outcomes must agree;
    /// if not, the equivalences used are wrong for this system and are dropped.
    fn check_equivalence(&mut self, plan: &Plan, number: u32, outcome: &Outcome) -> Vec<String> {
        if !self.config.reduction {
            return Vec::new();
        }
        let Some((equivalent, used)) = self.reduce(plan) else {
            return Vec::new();
        };
        let Some((other, other_outcome)) = self.results.get(&equivalent).cloned() else {
            return Vec::new();
        };
        if other_outcome.is_failure() == outcome.is_failure() {
            return vec![format!(
                "equivalent to execution #{other} ([{equivalent}]): same outcome"
            )];
        }
        self.violated.extend(used);
        vec![format!(
            "execution #{number} and #{other} should be equivalent but ended differently: \
             reduction no longer trusts that equivalence"
        )]
    }

    /// A non-idempotent request sent more often than in the reference after a lost
    /// response: the server probably did the work twice.
    fn repeated_after_lost_response(&self, plan: &Plan, calls: &[SiteCall]) -> Vec<String> {
        let mut notes = Vec::new();
        for fault in &plan.0 {
            if fault.fault != Fault::ResponseLost
                || !matches!(fault.site.method.as_str(), "POST" | "PATCH")
            {
                continue;
            }
            let same = |site: &CallSite| {
                site.source == fault.site.source
                    && site.destination == fault.site.destination
                    && site.method == fault.site.method
                    && site.path == fault.site.path
            };
            let now = calls.iter().filter(|c| same(&c.site)).count();
            let before = self.reference.keys().filter(|s| same(s)).count();
            // Done twice: a later attempt succeeded too (the lost one was executed).
            let again_ok = calls.iter().any(|c| {
                same(&c.site)
                    && c.site.index > fault.site.index
                    && matches!(c.response, Response::Status { status } if (200..300).contains(&status))
            });
            if now > before && again_ok {
                notes.push(format!(
                    "{} {}{} was sent {now} times (reference: {before}) after its response was \
                     lost: a non-idempotent request repeated, possibly executed twice",
                    fault.site.method, fault.site.destination, fault.site.path
                ));
            }
        }
        notes
    }
}

#[cfg(test)]
mod tests;
