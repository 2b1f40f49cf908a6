//! fi.v1.RuleService.

use std::sync::Arc;

use fi_api::{
    time,
    v1::{self as api, rule_service_server::RuleService},
};
use tonic::{Request, Response, Status};

use super::convert::control_error;
use crate::{
    daemon::Daemon,
    rules::{Draft, RuleView, State},
};

#[derive(Debug, Clone)]
pub struct RuleApi {
    daemon: Arc<Daemon>,
}

impl RuleApi {
    pub fn new(daemon: Arc<Daemon>) -> Self {
        Self { daemon }
    }
}

fn draft(req: &api::CreateRuleRequest) -> Result<Draft, Status> {
    let bad = |e: &dyn std::fmt::Display| Status::invalid_argument(e.to_string());
    let m = req.r#match.clone().unwrap_or_default();
    let fault = req.fault.unwrap_or_default();
    Ok(Draft {
        container: m.container,
        destination: m.destination,
        port: m.port,
        methods: m.methods,
        host: m.host,
        path: m.path,
        header_name: m.header_name,
        header_value: m.header_value,
        fault: fi_api::fault::from_api(&fault).map_err(|e| bad(&e))?,
        probability_ppm: req.probability_ppm,
        skip_first: req.skip_first,
        max_injections: req.max_injections,
        nth: req.nth,
        ttl: time::duration("ttl", req.ttl).map_err(|e| bad(&e))?,
        priority: req.priority,
        description: req.description.clone(),
    })
}

/// The API form of a rule's draft (what was asked, normalized).
fn spec_of(d: &Draft) -> api::CreateRuleRequest {
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
        fault: Some(d.fault.map(api::Fault::from).unwrap_or_default()),
        probability_ppm: d.probability_ppm,
        skip_first: d.skip_first,
        max_injections: d.max_injections,
        nth: d.nth,
        ttl: d.ttl.and_then(time::to_api),
        priority: d.priority,
        description: d.description.clone(),
    }
}

fn to_api(v: &RuleView) -> api::Rule {
    api::Rule {
        id: v.id,
        spec: Some(spec_of(&v.rule.draft)),
        state: match v.state {
            State::Active => api::RuleState::Active,
            State::Expired => api::RuleState::Expired,
            State::Exhausted => api::RuleState::Exhausted,
        } as i32,
        matched: v.stats.matched,
        injected: v.stats.injected,
        created_unix_nanos: time::unix_nanos(v.created),
        expires_unix_nanos: v.expires.map_or(0, time::unix_nanos),
        container_cgroup: v.rule.cgroup.clone().unwrap_or_default(),
    }
}

#[tonic::async_trait]
impl RuleService for RuleApi {
    async fn create_rule(
        &self,
        request: Request<api::CreateRuleRequest>,
    ) -> Result<Response<api::Rule>, Status> {
        let draft = draft(request.get_ref())?;
        let view = self
            .daemon
            .control()
            .create_rule(draft)
            .await
            .map_err(control_error)?;
        Ok(Response::new(to_api(&view)))
    }

    async fn list_rules(
        &self,
        _request: Request<api::ListRulesRequest>,
    ) -> Result<Response<api::ListRulesResponse>, Status> {
        let rules = self.daemon.control().list_rules().map_err(control_error)?;
        Ok(Response::new(api::ListRulesResponse {
            rules: rules.iter().map(to_api).collect(),
        }))
    }

    async fn get_rule(
        &self,
        request: Request<api::GetRuleRequest>,
    ) -> Result<Response<api::Rule>, Status> {
        let view = self
            .daemon
            .control()
            .get_rule(request.get_ref().id)
            .map_err(control_error)?;
        Ok(Response::new(to_api(&view)))
    }

    async fn delete_rule(
        &self,
        request: Request<api::DeleteRuleRequest>,
    ) -> Result<Response<api::DeleteRuleResponse>, Status> {
        self.daemon
            .control()
            .delete_rule(request.get_ref().id)
            .await
            .map_err(control_error)?;
        Ok(Response::new(api::DeleteRuleResponse {}))
    }

    async fn stop_all(
        &self,
        _request: Request<api::StopAllRequest>,
    ) -> Result<Response<api::StopAllResponse>, Status> {
        let stopped = self
            .daemon
            .control()
            .stop_all()
            .await
            .map_err(control_error)?;
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Ok(Response::new(api::StopAllResponse {
            removed: stopped.removed,
            released_held: count(stopped.ended.released),
            closed_connections: count(stopped.ended.closed),
        }))
    }
}
