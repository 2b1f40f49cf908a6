//! Domain types to API messages, and domain errors to gRPC codes.

use fi_api::{time::unix_nanos, v1 as api};
use tonic::Status;

use crate::{
    cgroup_fs::CgroupError,
    control::ControlError,
    explore::ExploreError,
    graph::CallGraph,
    requests::{ObservedRequest, Outcome},
    rules::RuleError,
    store::StoreError,
    targets::{TargetError, TargetInfo},
};

/// A core error as the gRPC code that tells a client what to do about it.
pub fn control_error(err: ControlError) -> Status {
    match err {
        ControlError::Rule(e) => rule_error(e),
        ControlError::Target(e) => target_error(e),
        e @ ControlError::Invalid { .. } => Status::invalid_argument(e.to_string()),
        e @ ControlError::NoTargets => Status::failed_precondition(e.to_string()),
        e
        @ (ControlError::DataPlane(_) | ControlError::Poisoned(_) | ControlError::Panicked(_)) => {
            Status::internal(e.to_string())
        }
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

pub fn explore_error(e: ExploreError) -> Status {
    let message = e.to_string();
    match e {
        ExploreError::Busy(_) | ExploreError::NotRunning { .. } | ExploreError::NoneRunning => {
            Status::failed_precondition(message)
        }
        ExploreError::Invalid { .. } => Status::invalid_argument(message),
        ExploreError::NoExecution(..) | ExploreError::Store(StoreError::NotFound(_)) => {
            Status::not_found(message)
        }
        ExploreError::Control(e) => control_error(e),
        ExploreError::Store(_) | ExploreError::Setup { .. } | ExploreError::Poisoned(_) => {
            Status::internal(message)
        }
    }
}

pub fn target(info: TargetInfo) -> api::Target {
    api::Target {
        spec: info.spec,
        cgroup: info.cgroup,
        cgroup_id: info.cgroup_id,
    }
}

pub fn target_error(err: TargetError) -> Status {
    let message = err.to_string();
    match err {
        TargetError::Resolve { source, .. } => match source {
            CgroupError::NotFound { .. } | CgroupError::NoSuchContainer(_) => {
                Status::not_found(message)
            }
            CgroupError::Escapes(_)
            | CgroupError::OutsideMount { .. }
            | CgroupError::AmbiguousContainer { .. } => Status::invalid_argument(message),
            CgroupError::NoCgroup2Mount
            | CgroupError::Mounts(_)
            | CgroupError::ForeignCgroup2 { .. } => Status::failed_precondition(message),
        },
        TargetError::NotFound(_) => Status::not_found(message),
        TargetError::TooMany => Status::resource_exhausted(message),
        TargetError::CgroupId { .. } | TargetError::Map(_) => Status::internal(message),
    }
}

pub fn request(r: &ObservedRequest) -> api::ObservedRequest {
    let (outcome, status, latency) = match r.outcome {
        Outcome::Response { status, latency } => (
            api::Outcome::Response,
            u32::from(status),
            u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX),
        ),
        Outcome::NoResponse => (api::Outcome::NoResponse, 0, 0),
    };
    api::ObservedRequest {
        id: r.id,
        start_unix_nanos: unix_nanos(r.start),
        source_cgroup: r.source_cgroup.clone(),
        source_cgroup_id: r.source_cgroup_id,
        client: r.client.to_string(),
        server: r.server.to_string(),
        method: r.method.as_str().to_owned(),
        host: r.host.clone(),
        path: r.path.clone(),
        path_truncated: r.path_truncated,
        http_minor_version: u32::from(r.http_minor),
        headers: r.headers.iter().cloned().collect(),
        outcome: outcome as i32,
        status,
        latency_nanos: latency,
        index_on_connection: r.index,
        fault: r
            .fault
            .map(|(_, f)| f.name().to_owned())
            .unwrap_or_default(),
        rule_id: r.fault.map_or(0, |(id, _)| id),
    }
}

pub fn graph(g: &CallGraph) -> api::CallGraph {
    let edges = g
        .edges
        .iter()
        .map(|((source, destination), e)| api::Edge {
            source: source.clone(),
            destination: destination.clone(),
            servers: e.servers.iter().cloned().collect(),
            requests: e.requests,
            no_response: e.no_response,
            statuses: e
                .statuses
                .iter()
                .map(|(s, n)| (u32::from(*s), *n))
                .collect(),
            latency: Some(api::LatencySummary {
                min_nanos: e.latency.min(),
                max_nanos: e.latency.max(),
                mean_nanos: e.latency.mean(),
                p50_nanos: e.latency.quantile(0.5),
                p99_nanos: e.latency.quantile(0.99),
            }),
            endpoints: e
                .endpoints
                .iter()
                .map(|((method, path), n)| api::Endpoint {
                    method: method.clone(),
                    path: path.clone(),
                    requests: *n,
                })
                .collect(),
        })
        .collect();
    api::CallGraph {
        edges,
        requests: g.requests,
    }
}
