//! What one run of callers records (latency of each successful call, failed
//! calls by gRPC code) and the summary printed from it. Latencies are kept
//! whole, in microseconds, so percentiles are exact rather than bucketed.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::client::status::code_name;

/// The raw record of one caller, or of several merged.
#[derive(Debug, Default)]
pub(crate) struct Samples {
    latencies_us: Vec<u64>,
    errors: BTreeMap<String, u64>,
    elapsed: Duration,
}

impl Samples {
    pub(crate) fn ok(&mut self, latency: Duration) {
        self.latencies_us
            .push(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
    }

    pub(crate) fn error(&mut self, code: tonic::Code) {
        *self.errors.entry(code_name(code).to_owned()).or_default() += 1;
    }

    /// Adds another caller's record (or another slice of the same scenario).
    pub(crate) fn merge(&mut self, other: Samples) {
        self.latencies_us.extend(other.latencies_us);
        for (code, count) in other.errors {
            *self.errors.entry(code).or_default() += count;
        }
        self.elapsed += other.elapsed;
    }

    /// Wall time the callers ran; slices of one scenario add up.
    pub(crate) fn add_elapsed(&mut self, elapsed: Duration) {
        self.elapsed += elapsed;
    }

    pub(crate) fn summarize(mut self, scenario: &str) -> Summary {
        self.latencies_us.sort_unstable();
        let ok = self.latencies_us.len() as u64;
        let failed: u64 = self.errors.values().sum();
        let seconds = self.elapsed.as_secs_f64();
        let percentile = |p: f64| percentile_ms(&self.latencies_us, p);
        Summary {
            scenario: scenario.to_owned(),
            duration_s: round3(seconds),
            calls: ok + failed,
            ok,
            throughput: if seconds > 0.0 {
                round3(ok as f64 / seconds)
            } else {
                0.0
            },
            latency_ms: Latency {
                p50: percentile(50.0),
                p90: percentile(90.0),
                p99: percentile(99.0),
                max: self
                    .latencies_us
                    .last()
                    .map_or(0.0, |us| round3(*us as f64 / 1000.0)),
            },
            errors: self.errors,
        }
    }
}

/// One scenario's figures: `throughput` counts successful calls per second
/// and the latencies are of successful calls only, so failing fast cannot
/// flatter either.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Summary {
    pub(crate) scenario: String,
    pub(crate) duration_s: f64,
    pub(crate) calls: u64,
    pub(crate) ok: u64,
    pub(crate) throughput: f64,
    pub(crate) latency_ms: Latency,
    /// Failed calls by gRPC code name (`UNAVAILABLE`, …).
    pub(crate) errors: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Latency {
    pub(crate) p50: f64,
    pub(crate) p90: f64,
    pub(crate) p99: f64,
    pub(crate) max: f64,
}

/// Nearest-rank percentile of sorted microseconds, in milliseconds.
fn percentile_ms(sorted_us: &[u64], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted_us.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted_us.len()) - 1;
    round3(sorted_us[index] as f64 / 1000.0)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut samples = Samples::default();
        for ms in 1..=100 {
            samples.ok(Duration::from_millis(ms));
        }
        samples.error(tonic::Code::DeadlineExceeded);
        samples.add_elapsed(Duration::from_secs(2));
        let summary = samples.summarize("resolve");
        assert_eq!(summary.calls, 101);
        assert_eq!(summary.ok, 100);
        assert_eq!(summary.throughput, 50.0);
        assert_eq!(summary.latency_ms.p50, 50.0);
        assert_eq!(summary.latency_ms.p90, 90.0);
        assert_eq!(summary.latency_ms.p99, 99.0);
        assert_eq!(summary.latency_ms.max, 100.0);
        assert_eq!(summary.errors["DEADLINE_EXCEEDED"], 1);
    }

    #[test]
    fn merged_slices_add_up() {
        let mut a = Samples::default();
        a.ok(Duration::from_micros(1500));
        a.add_elapsed(Duration::from_secs(1));
        let mut b = Samples::default();
        b.error(tonic::Code::Unavailable);
        b.add_elapsed(Duration::from_secs(1));
        a.merge(b);
        let summary = a.summarize("health");
        assert_eq!(summary.duration_s, 2.0);
        assert_eq!(summary.latency_ms.p50, 1.5);
        assert_eq!(summary.errors["UNAVAILABLE"], 1);
        let empty = Samples::default().summarize("health");
        assert_eq!((empty.calls, empty.throughput), (0, 0.0));
    }
}
