//! `prometheus`: Kong's config flags. The plugin records nothing per request of its own:
//! the workers' histograms and counters (`crate::observe`) are always kept, and the flags
//! choose which of Kong's series `GET /metrics` prints.

use serde::{Deserialize, Serialize};

/// The plugin's `config`, as Kong names and defaults it (every flag off).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub per_consumer: bool,
    #[serde(default)]
    pub status_code_metrics: bool,
    #[serde(default)]
    pub latency_metrics: bool,
    #[serde(default)]
    pub bandwidth_metrics: bool,
    #[serde(default)]
    pub upstream_health_metrics: bool,
    #[serde(default)]
    pub ai_metrics: bool,
    #[serde(default)]
    pub wasm_metrics: bool,
}

impl Config {
    /// The flags of several instances together (any instance turning a series on).
    pub fn union(&self, other: &Config) -> Config {
        Config {
            per_consumer: self.per_consumer || other.per_consumer,
            status_code_metrics: self.status_code_metrics || other.status_code_metrics,
            latency_metrics: self.latency_metrics || other.latency_metrics,
            bandwidth_metrics: self.bandwidth_metrics || other.bandwidth_metrics,
            upstream_health_metrics: self.upstream_health_metrics || other.upstream_health_metrics,
            ai_metrics: self.ai_metrics || other.ai_metrics,
            wasm_metrics: self.wasm_metrics || other.wasm_metrics,
        }
    }
}
