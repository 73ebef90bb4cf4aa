//! Cluster mode's metrics: per credential, never per FiskilToken, so their number follows the
//! credentials however many tokens there are.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::SystemTime;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::metrics::{unix_seconds, Metrics, RefreshResult};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CredentialLabels {
    credential: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CredentialResultLabels {
    credential: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// The families cluster mode adds to the daemon's registry.
pub(crate) struct ControllerMetrics {
    /// The daemon's metrics: token requests of every credential also count there.
    pub(crate) base: Arc<Metrics>,
    refresh: Family<CredentialResultLabels, Counter>,
    expiry: Family<CredentialLabels, FloatGauge>,
    next_refresh: Family<CredentialLabels, FloatGauge>,
    users: Family<CredentialLabels, Gauge>,
    writes: Family<ResultLabels, Counter>,
    tokens: Family<ReasonLabels, Gauge>,
}

impl ControllerMetrics {
    /// Registers the families in `base` (before it is shared) and returns both.
    pub(crate) fn new(mut base: Metrics) -> Arc<ControllerMetrics> {
        let refresh = Family::<CredentialResultLabels, Counter>::default();
        base.register(
            "credential_refresh",
            "Token requests by credential (KIND/NAMESPACE/NAME) and result",
            refresh.clone(),
        );
        let expiry = Family::<CredentialLabels, FloatGauge>::default();
        base.register(
            "credential_token_expiry_timestamp_seconds",
            "Unix time at which the newest token of each credential expires",
            expiry.clone(),
        );
        let next_refresh = Family::<CredentialLabels, FloatGauge>::default();
        base.register(
            "credential_next_refresh_timestamp_seconds",
            "Unix time of each credential's next scheduled token request",
            next_refresh.clone(),
        );
        let users = Family::<CredentialLabels, Gauge>::default();
        base.register(
            "credential_fiskiltokens",
            "FiskilTokens using each credential",
            users.clone(),
        );
        let writes = Family::<ResultLabels, Counter>::default();
        base.register(
            "fiskiltoken_secret_write",
            "Writes of FiskilTokens' Secrets by result (success, error)",
            writes.clone(),
        );
        let tokens = Family::<ReasonLabels, Gauge>::default();
        base.register(
            "fiskiltokens",
            "FiskilTokens by the reason of their Ready condition",
            tokens.clone(),
        );
        Arc::new(ControllerMetrics {
            base: Arc::new(base),
            refresh,
            expiry,
            next_refresh,
            users,
            writes,
            tokens,
        })
    }

    pub(crate) fn requested(&self, credential: &str, result: RefreshResult, seconds: f64) {
        self.base.observe_refresh(result, seconds);
        self.refresh
            .get_or_create(&CredentialResultLabels {
                credential: credential.to_owned(),
                result: result.label(),
            })
            .inc();
    }

    pub(crate) fn set_expiry(&self, credential: &str, at: SystemTime) {
        self.expiry
            .get_or_create(&credential_labels(credential))
            .set(unix_seconds(at));
    }

    pub(crate) fn set_next_refresh(&self, credential: &str, at: SystemTime) {
        self.next_refresh
            .get_or_create(&credential_labels(credential))
            .set(unix_seconds(at));
    }

    pub(crate) fn set_users(&self, credential: &str, count: usize) {
        self.users
            .get_or_create(&credential_labels(credential))
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Drops every series of a credential no FiskilToken uses any more.
    pub(crate) fn forget(&self, credential: &str) {
        let labels = credential_labels(credential);
        self.expiry.remove(&labels);
        self.next_refresh.remove(&labels);
        self.users.remove(&labels);
        for result in RefreshResult::ALL {
            self.refresh.remove(&CredentialResultLabels {
                credential: credential.to_owned(),
                result: result.label(),
            });
        }
    }

    pub(crate) fn observe_write(&self, ok: bool) {
        let result = if ok { "success" } else { "error" };
        self.writes.get_or_create(&ResultLabels { result }).inc();
    }

    /// Sets how many FiskilTokens have each Ready reason, and drops reasons none has.
    pub(crate) fn set_tokens(&self, counts: &std::collections::BTreeMap<&'static str, i64>) {
        self.tokens.clear();
        for (reason, count) in counts {
            self.tokens
                .get_or_create(&ReasonLabels {
                    reason: (*reason).to_owned(),
                })
                .set(*count);
        }
    }
}

fn credential_labels(credential: &str) -> CredentialLabels {
    CredentialLabels {
        credential: credential.to_owned(),
    }
}
