//! The bench report: one stable JSON object (read by tests and docs) or a
//! short table. Only figures and names are printed, never a value.

use std::time::Duration;

use serde::Serialize;

use super::stats::Summary;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    Table,
    Json,
}

/// The JSON object: the scenario's figures at the top level, and with
/// --compare the baseline's figures and scenario/baseline throughput.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    tenant: String,
    concurrency: u32,
    connections: u32,
    /// Seconds spent seeding (not part of any figure).
    seed_s: f64,
    #[serde(flatten)]
    measured: Summary,
    #[serde(skip_serializing_if = "Option::is_none")]
    baseline: Option<Summary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ratio: Option<f64>,
}

impl Report {
    pub(crate) fn new(
        tenant: &str,
        concurrency: u32,
        connections: u32,
        seed_time: Duration,
        measured: Summary,
        baseline: Option<Summary>,
    ) -> Self {
        let ratio = baseline.as_ref().map(|b| {
            if b.throughput > 0.0 {
                (measured.throughput / b.throughput * 1000.0).round() / 1000.0
            } else {
                0.0
            }
        });
        Report {
            tenant: tenant.to_owned(),
            concurrency,
            connections,
            seed_s: (seed_time.as_secs_f64() * 1000.0).round() / 1000.0,
            measured,
            baseline,
            ratio,
        }
    }

    pub(crate) fn print(&self, format: Format) -> anyhow::Result<()> {
        match format {
            Format::Json => println!("{}", serde_json::to_string_pretty(self)?),
            Format::Table => print!("{}", self.table()),
        }
        Ok(())
    }

    fn table(&self) -> String {
        let mut out = format!(
            "tenant {}, {} callers over {} connections, seeded in {:.1}s\n",
            self.tenant, self.concurrency, self.connections, self.seed_s
        );
        out.push_str(&format!(
            "{:<17} {:>8} {:>9} {:>12} {:>9} {:>9} {:>9} {:>9}  errors\n",
            "scenario", "seconds", "calls", "calls/s", "p50 ms", "p90 ms", "p99 ms", "max ms"
        ));
        for summary in std::iter::once(&self.measured).chain(&self.baseline) {
            let errors = if summary.errors.is_empty() {
                "none".to_owned()
            } else {
                summary
                    .errors
                    .iter()
                    .map(|(code, n)| format!("{code}={n}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            out.push_str(&format!(
                "{:<17} {:>8.1} {:>9} {:>12.1} {:>9.3} {:>9.3} {:>9.3} {:>9.3}  {errors}\n",
                summary.scenario,
                summary.duration_s,
                summary.calls,
                summary.throughput,
                summary.latency_ms.p50,
                summary.latency_ms.p90,
                summary.latency_ms.p99,
                summary.latency_ms.max,
            ));
        }
        if let (Some(ratio), Some(baseline)) = (self.ratio, &self.baseline) {
            out.push_str(&format!(
                "ratio {}/{}: {ratio:.3}\n",
                self.measured.scenario, baseline.scenario
            ));
        }
        out
    }
}
