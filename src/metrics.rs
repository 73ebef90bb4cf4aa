//! The Prometheus metrics the daemon exports, and their text encoding.

use std::sync::atomic::AtomicU64;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Outcome of one token request, as the `result` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RefreshResult {
    Success,
    Rejected,
    Transient,
    InvalidResponse,
}

impl RefreshResult {
    /// Every result, for removing a label set.
    pub(crate) const ALL: [RefreshResult; 4] = [
        RefreshResult::Success,
        RefreshResult::Rejected,
        RefreshResult::Transient,
        RefreshResult::InvalidResponse,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            RefreshResult::Success => "success",
            RefreshResult::Rejected => "rejected",
            RefreshResult::Transient => "transient",
            RefreshResult::InvalidResponse => "invalid_response",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutputLabels {
    output: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutputNameLabels {
    output: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NotifyLabels {
    kind: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Every metric, registered under the `fiskil_token_refresher_` prefix.
pub(crate) struct Metrics {
    registry: Registry,
    refresh: Family<ResultLabels, Counter>,
    refresh_duration: Histogram,
    token_expiry: FloatGauge,
    next_refresh: FloatGauge,
    last_success: FloatGauge,
    pub credential_reloads: Counter,
    output_write: Family<OutputLabels, Counter>,
    output_expiry: Family<OutputNameLabels, FloatGauge>,
    notify: Family<NotifyLabels, Counter>,
    proxy_requests: Family<CodeLabels, Counter>,
    proxy_duration: Histogram,
    leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("fiskil_token_refresher");
        let refresh = Family::<ResultLabels, Counter>::default();
        registry.register(
            "refresh",
            "Token requests by result: success, rejected, transient, invalid_response",
            refresh.clone(),
        );
        let refresh_duration =
            Histogram::new([0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]);
        registry.register(
            "refresh_duration_seconds",
            "Time taken by token requests, whatever their result",
            refresh_duration.clone(),
        );
        let token_expiry = FloatGauge::default();
        registry.register(
            "token_expiry_timestamp_seconds",
            "Unix time at which the newest token obtained expires, whether or not an output holds it",
            token_expiry.clone(),
        );
        let next_refresh = FloatGauge::default();
        registry.register(
            "next_refresh_timestamp_seconds",
            "Unix time of the next scheduled token request",
            next_refresh.clone(),
        );
        let last_success = FloatGauge::default();
        registry.register(
            "last_success_timestamp_seconds",
            "Unix time of the last successful token request",
            last_success.clone(),
        );
        let credential_reloads = Counter::default();
        registry.register(
            "credential_reloads",
            "Changes of the client credentials picked up from their files",
            credential_reloads.clone(),
        );
        let output_write = Family::<OutputLabels, Counter>::default();
        registry.register(
            "output_write",
            "Token writes by output (file, secret) and result (success, error)",
            output_write.clone(),
        );
        let output_expiry = Family::<OutputNameLabels, FloatGauge>::default();
        registry.register(
            "output_token_expiry_timestamp_seconds",
            "Unix time at which the token each output holds expires",
            output_expiry.clone(),
        );
        let notify = Family::<NotifyLabels, Counter>::default();
        registry.register(
            "notify",
            "Notification attempts by kind (url, signal) and result (success, error)",
            notify.clone(),
        );
        let proxy_requests = Family::<CodeLabels, Counter>::default();
        registry.register(
            "proxy_requests",
            "Requests answered by the proxy, by HTTP status code",
            proxy_requests.clone(),
        );
        let proxy_duration = Histogram::new([
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ]);
        registry.register(
            "proxy_request_duration_seconds",
            "Time from a request's arrival at the proxy to its response headers",
            proxy_duration.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica may request tokens and write (it holds the Lease, or runs without --leader-elect), else 0",
            leader.clone(),
        );
        let build_info = Family::<BuildLabels, Gauge>::default();
        registry.register(
            "build_info",
            "Always 1; the version label names the running build",
            build_info.clone(),
        );
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        Metrics {
            registry,
            refresh,
            refresh_duration,
            token_expiry,
            next_refresh,
            last_success,
            credential_reloads,
            output_write,
            output_expiry,
            notify,
            proxy_requests,
            proxy_duration,
            leader,
        }
    }

    /// Adds a metric of another component (cluster mode's) under the same prefix.
    pub(crate) fn register(
        &mut self,
        name: &str,
        help: &str,
        metric: impl prometheus_client::registry::Metric,
    ) {
        self.registry.register(name, help, metric);
    }

    /// Records one token request.
    pub(crate) fn observe_refresh(&self, result: RefreshResult, seconds: f64) {
        self.refresh
            .get_or_create(&ResultLabels {
                result: result.label(),
            })
            .inc();
        self.refresh_duration.observe(seconds);
        if result == RefreshResult::Success {
            self.last_success.set(unix_seconds(SystemTime::now()));
        }
    }

    /// Records the expiry of a new token.
    pub(crate) fn set_token_expiry(&self, at: SystemTime) {
        self.token_expiry.set(unix_seconds(at));
    }

    /// Records when the next token request is due.
    pub(crate) fn set_next_refresh(&self, at: SystemTime) {
        self.next_refresh.set(unix_seconds(at));
    }

    /// Records one write to an output.
    pub(crate) fn observe_write(&self, output: &str, ok: bool) {
        let result = if ok { "success" } else { "error" };
        self.output_write
            .get_or_create(&OutputLabels {
                output: output.to_owned(),
                result,
            })
            .inc();
    }

    /// Records that `output` now holds a token expiring at `at`.
    pub(crate) fn set_output_expiry(&self, output: &str, at: SystemTime) {
        self.output_expiry
            .get_or_create(&OutputNameLabels {
                output: output.to_owned(),
            })
            .set(unix_seconds(at));
    }

    /// Records whether this replica leads.
    pub(crate) fn set_leader(&self, leads: bool) {
        self.leader.set(i64::from(leads));
    }

    /// Records one notification attempt.
    pub(crate) fn observe_notify(&self, kind: &'static str, ok: bool) {
        let result = if ok { "success" } else { "error" };
        self.notify
            .get_or_create(&NotifyLabels { kind, result })
            .inc();
    }

    /// Records one request answered by the proxy.
    pub(crate) fn observe_proxy(&self, code: u16, seconds: f64) {
        self.proxy_requests
            .get_or_create(&CodeLabels { code })
            .inc();
        self.proxy_duration.observe(seconds);
    }

    /// The OpenMetrics text exposition of every metric.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// Seconds since the Unix epoch, as a float.
pub(crate) fn unix_seconds(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_documentation() {
        let metrics = Metrics::new();
        metrics.observe_refresh(RefreshResult::InvalidResponse, 0.2);
        metrics.observe_write("file", true);
        metrics.credential_reloads.inc();
        metrics.set_output_expiry(
            "secret:team-a/token",
            UNIX_EPOCH + std::time::Duration::from_secs(90),
        );
        metrics.set_leader(true);
        metrics.observe_notify("signal", false);
        metrics.observe_proxy(401, 0.002);
        let text = metrics.encode();
        for line in [
            "fiskil_token_refresher_refresh_total{result=\"invalid_response\"} 1",
            "fiskil_token_refresher_refresh_duration_seconds_count 1",
            "fiskil_token_refresher_token_expiry_timestamp_seconds 0.0",
            "fiskil_token_refresher_next_refresh_timestamp_seconds 0.0",
            "fiskil_token_refresher_last_success_timestamp_seconds 0.0",
            "fiskil_token_refresher_credential_reloads_total 1",
            "fiskil_token_refresher_output_write_total{output=\"file\",result=\"success\"} 1",
            "fiskil_token_refresher_output_token_expiry_timestamp_seconds{output=\"secret:team-a/token\"} 90.0",
            "fiskil_token_refresher_leader 1",
            "fiskil_token_refresher_build_info{version=\"",
            "fiskil_token_refresher_notify_total{kind=\"signal\",result=\"error\"} 1",
            "fiskil_token_refresher_proxy_requests_total{code=\"401\"} 1",
            "fiskil_token_refresher_proxy_request_duration_seconds_count 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}
