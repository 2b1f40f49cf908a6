//! fi.v1.RuleService.

use std::{
    sync::Arc,
    time::{Duration, UNIX_EPOCH},
};

use fi_common::rule::Fault;
use tonic::{Request, Response, Status};

use super::{Daemon, Ended, lock};
use crate::{
    api::v1::{self as api, rule_service_server::RuleService},
    rules::{self, Draft, RuleError, RuleView, State},
};

#[derive(Debug, Clone)]
pub struct RuleApi {
    daemon: Arc<Daemon>,
}

impl RuleApi {
    pub fn new(daemon: Arc<Daemon>) -> Self {
        Self { daemon }
    }

    /// [`Daemon::end_faults`], off the async threads.
    async fn end_faults(&self, rule: Option<u32>) -> Ended {
        let daemon = Arc::clone(&self.daemon);
        tokio::task::spawn_blocking(move || daemon.end_faults(rule))
            .await
            .unwrap_or_default()
    }
}

fn rule_error(err: RuleError) -> Status {
    let message = err.to_string();
    match err {
        RuleError::Invalid { .. } => Status::invalid_argument(message),
        // A rule naming a container that does not resolve is a bad argument of that rule
        // (the field is named), whatever the cgroup error was.
        RuleError::Container(_) => Status::invalid_argument(message),
        RuleError::NotFound(_) => Status::not_found(message),
        RuleError::TooMany => Status::resource_exhausted(message),
        RuleError::Map(_) => Status::internal(message),
    }
}

fn duration(
    field: &'static str,
    d: Option<prost_types::Duration>,
) -> Result<Option<Duration>, Status> {
    d.map(|d| {
        Duration::try_from(d).map_err(|_| {
            Status::invalid_argument(format!("{field}: a negative or out-of-range duration"))
        })
    })
    .transpose()
}

fn fault_kind(kind: i32) -> Result<Option<Fault>, Status> {
    Ok(match api::FaultKind::try_from(kind) {
        Ok(api::FaultKind::Unspecified) => None,
        Ok(api::FaultKind::Timeout) => Some(Fault::Blackhole),
        Ok(api::FaultKind::Reset) => Some(Fault::Reset),
        Ok(api::FaultKind::Refuse) => Some(Fault::Refuse),
        Ok(api::FaultKind::Abort) => Some(Fault::Abort),
        Ok(api::FaultKind::ResponseLost) => Some(Fault::ResponseLost),
        Ok(api::FaultKind::Delay) => Some(Fault::Delay),
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "fault.kind: unknown value {kind}"
            )));
        }
    })
}

fn draft(req: &api::CreateRuleRequest) -> Result<Draft, Status> {
    let m = req.r#match.clone().unwrap_or_default();
    let f = req.fault.unwrap_or_default();
    Ok(Draft {
        container: m.container,
        destination: m.destination,
        port: m.port,
        methods: m.methods,
        host: m.host,
        path: m.path,
        header_name: m.header_name,
        header_value: m.header_value,
        fault: fault_kind(f.kind)?,
        status: f.status,
        delay: duration("fault.delay", f.delay)?,
        probability_ppm: req.probability_ppm,
        skip_first: req.skip_first,
        max_injections: req.max_injections,
        nth: req.nth,
        ttl: duration("ttl", req.ttl)?,
        priority: req.priority,
        description: req.description.clone(),
    })
}

fn unix_nanos(t: std::time::SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

fn to_api(v: &RuleView, spec: &api::CreateRuleRequest) -> api::Rule {
    api::Rule {
        id: v.id,
        spec: Some(spec.clone()),
        state: match v.state {
            State::Active => api::RuleState::Active,
            State::Expired => api::RuleState::Expired,
            State::Exhausted => api::RuleState::Exhausted,
        } as i32,
        matched: v.stats.matched,
        injected: v.stats.injected,
        created_unix_nanos: unix_nanos(v.created),
        expires_unix_nanos: v.expires.map_or(0, unix_nanos),
        container_cgroup: v.rule.cgroup.clone().unwrap_or_default(),
    }
}

/// The API form of a rule's draft (what was asked, normalized).
fn spec_of(d: &Draft) -> api::CreateRuleRequest {
    let kind = match d.fault {
        Some(Fault::Blackhole) => api::FaultKind::Timeout,
        Some(Fault::Reset) => api::FaultKind::Reset,
        Some(Fault::Refuse) => api::FaultKind::Refuse,
        Some(Fault::Abort) => api::FaultKind::Abort,
        Some(Fault::ResponseLost) => api::FaultKind::ResponseLost,
        Some(Fault::Delay) => api::FaultKind::Delay,
        None => api::FaultKind::Unspecified,
    };
    let proto_duration =
        |d: Option<Duration>| d.and_then(|d| prost_types::Duration::try_from(d).ok());
    api::CreateRuleRequest {
        r#match: Some(api::Match {
            container: d.container.clone(),
            destination: d.destination.clone(),
            port: d.port,
            methods: d.methods.clone(),
            host: d.host.clone(),
            path: d.path.clone(),
            header_name: d.header_name.clone(),
            header_value: d.header_value.clone(),
        }),
        fault: Some(api::Fault {
            kind: kind as i32,
            status: d.status,
            delay: proto_duration(d.delay),
        }),
        probability_ppm: d.probability_ppm,
        skip_first: d.skip_first,
        max_injections: d.max_injections,
        nth: d.nth,
        ttl: proto_duration(d.ttl),
        priority: d.priority,
        description: d.description.clone(),
    }
}

#[tonic::async_trait]
impl RuleService for RuleApi {
    async fn create_rule(
        &self,
        request: Request<api::CreateRuleRequest>,
    ) -> Result<Response<api::Rule>, Status> {
        let draft = draft(request.get_ref())?;
        let validated = {
            let targets = lock(&self.daemon.targets)?;
            rules::validate(draft, &self.daemon.capture, &targets).map_err(rule_error)?
        };
        let mut rules = lock(&self.daemon.rules)?;
        let id = rules.create(validated).map_err(rule_error)?;
        let view = rules.get(id).map_err(rule_error)?;
        tracing::info!(rule = id, fault = ?view.rule.draft.fault, "rule created");
        Ok(Response::new(to_api(&view, &spec_of(&view.rule.draft))))
    }

    async fn list_rules(
        &self,
        _request: Request<api::ListRulesRequest>,
    ) -> Result<Response<api::ListRulesResponse>, Status> {
        let rules = lock(&self.daemon.rules)?
            .list()
            .iter()
            .map(|v| to_api(v, &spec_of(&v.rule.draft)))
            .collect();
        Ok(Response::new(api::ListRulesResponse { rules }))
    }

    async fn get_rule(
        &self,
        request: Request<api::GetRuleRequest>,
    ) -> Result<Response<api::Rule>, Status> {
        let view = lock(&self.daemon.rules)?
            .get(request.get_ref().id)
            .map_err(rule_error)?;
        Ok(Response::new(to_api(&view, &spec_of(&view.rule.draft))))
    }

    async fn delete_rule(
        &self,
        request: Request<api::DeleteRuleRequest>,
    ) -> Result<Response<api::DeleteRuleResponse>, Status> {
        let id = request.get_ref().id;
        lock(&self.daemon.rules)?.delete(id).map_err(rule_error)?;
        let ended = self.end_faults(Some(id)).await;
        tracing::info!(rule = id, ?ended, "rule deleted");
        Ok(Response::new(api::DeleteRuleResponse {}))
    }

    async fn stop_all(
        &self,
        _request: Request<api::StopAllRequest>,
    ) -> Result<Response<api::StopAllResponse>, Status> {
        let removed = lock(&self.daemon.rules)?.stop_all().map_err(rule_error)?;
        // Answered only once every delayed request has gone on.
        let ended = self.end_faults(None).await;
        tracing::warn!(removed, ?ended, "kill switch: every rule removed");
        Ok(Response::new(api::StopAllResponse {
            removed,
            released_held: u32::try_from(ended.released).unwrap_or(u32::MAX),
            closed_connections: u32::try_from(ended.closed).unwrap_or(u32::MAX),
        }))
    }
}
