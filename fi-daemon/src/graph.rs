//! The call graph: edges from source container to destination, built from completed
//! requests, and the path normalization that groups requests into endpoints.

use std::collections::{BTreeMap, BTreeSet};

use crate::observed::{ObservedRequest, Outcome};

/// Log-scale latency histogram: bucket i holds values in [2^(i/4), 2^((i+1)/4)) ns, so
/// quantiles are within ~19 % (a quarter of an octave).
#[derive(Debug, Clone, Default)]
pub struct LatencyHistogram {
    buckets: BTreeMap<u32, u64>,
    count: u64,
    sum: u128,
    min: u64,
    max: u64,
}

impl LatencyHistogram {
    fn bucket(nanos: u64) -> u32 {
        if nanos == 0 {
            return 0;
        }
        // 4 buckets per octave.
        ((nanos as f64).log2() * 4.0).floor() as u32
    }

    fn bucket_floor(bucket: u32) -> u64 {
        2f64.powf(f64::from(bucket) / 4.0) as u64
    }

    pub fn record(&mut self, nanos: u64) {
        *self.buckets.entry(Self::bucket(nanos)).or_default() += 1;
        self.min = if self.count == 0 {
            nanos
        } else {
            self.min.min(nanos)
        };
        self.max = self.max.max(nanos);
        self.count += 1;
        self.sum += u128::from(nanos);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn min(&self) -> u64 {
        self.min
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    pub fn mean(&self) -> u64 {
        if self.count == 0 {
            0
        } else {
            (self.sum / u128::from(self.count)) as u64
        }
    }

    /// The q-quantile (0..=1), clamped to the observed min and max.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (bucket, n) in &self.buckets {
            seen += n;
            if seen >= rank {
                return Self::bucket_floor(*bucket).clamp(self.min, self.max);
            }
        }
        self.max
    }
}

/// One edge: a source container calling a destination.
#[derive(Debug, Clone, Default)]
pub struct Edge {
    pub servers: BTreeSet<String>,
    pub requests: u64,
    pub no_response: u64,
    pub statuses: BTreeMap<u16, u64>,
    pub latency: LatencyHistogram,
    /// (method, normalized path) -> requests.
    pub endpoints: BTreeMap<(String, String), u64>,
}

/// Edges keyed by (source cgroup, destination).
#[derive(Debug, Clone, Default)]
pub struct CallGraph {
    pub edges: BTreeMap<(String, String), Edge>,
    pub requests: u64,
}

impl CallGraph {
    /// The destination of a request: its Host header, else the server address.
    pub fn destination(request: &ObservedRequest) -> String {
        if request.host.is_empty() {
            request.server.to_string()
        } else {
            request.host.clone()
        }
    }

    pub fn record(&mut self, request: &ObservedRequest) {
        self.requests += 1;
        let key = (request.source_cgroup.clone(), Self::destination(request));
        let edge = self.edges.entry(key).or_default();
        edge.requests += 1;
        edge.servers.insert(request.server.to_string());
        match request.outcome {
            Outcome::Response { status, latency } => {
                *edge.statuses.entry(status).or_default() += 1;
                edge.latency
                    .record(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
            }
            Outcome::NoResponse => edge.no_response += 1,
        }
        *edge
            .endpoints
            .entry((
                request.method.as_str().to_owned(),
                fi_explore::path::normalize(&request.path),
            ))
            .or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_close_to_the_truth() {
        let mut h = LatencyHistogram::default();
        for ms in 1..=100u64 {
            h.record(ms * 1_000_000);
        }
        let p50 = h.quantile(0.5) as f64 / 1e6;
        let p99 = h.quantile(0.99) as f64 / 1e6;
        assert!((40.0..=50.0).contains(&p50), "p50 {p50}");
        assert!((80.0..=99.0).contains(&p99), "p99 {p99}");
        assert_eq!(h.min(), 1_000_000);
        assert_eq!(h.max(), 100_000_000);
        assert_eq!(h.mean(), 50_500_000);
        assert_eq!(LatencyHistogram::default().quantile(0.5), 0);
    }
}
