//! One exchange per credential: follows the credential's Secret and runs the refresh loop for
//! it, however many FiskilTokens use it. Each FiskilToken's writer follows its [`Supply`].

use std::sync::Arc;
use std::time::SystemTime;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use secrecy::SecretString;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use url::Url;

use super::metrics::ControllerMetrics;
use super::resources::CredentialKind;
use crate::credentials::{Credentials, MAX_CREDENTIAL_BYTES};
use crate::fiskil::{HttpSettings, TokenClient, Tokens};
use crate::happenings::{Happening, Happenings, ObjectName};
use crate::leadership::Leadership;
use crate::metrics::RefreshResult;
use crate::refresher::{Observer, RefreshRequests, Refresher};
use crate::schedule::Timing;

/// Ready reason: the credential's Secret is missing, unreadable or lacks a key, or its
/// tokenURL is unusable.
pub(crate) const CREDENTIAL_INVALID: &str = "CredentialInvalid";
/// Ready reason: the token endpoint refused the credentials.
pub(crate) const CREDENTIALS_REJECTED: &str = "CredentialsRejected";
/// Ready reason: token requests keep failing and the token is (nearly) spent.
pub(crate) const ENDPOINT_UNAVAILABLE: &str = "EndpointUnavailable";

/// Which credential: a FiskilCredential by namespace and name, or a ClusterFiskilCredential by
/// name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct CredentialKey {
    pub kind: CredentialKind,
    pub namespace: Option<String>,
    pub name: String,
}

impl std::fmt::Display for CredentialKey {
    /// `FiskilCredential/NAMESPACE/NAME` or `ClusterFiskilCredential/NAME`: the metrics label.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(namespace) => write!(f, "{:?}/{namespace}/{}", self.kind, self.name),
            None => write!(f, "{:?}/{}", self.kind, self.name),
        }
    }
}

/// Where a credential's values are, and where they are sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CredentialSource {
    pub secret: ObjectName,
    pub client_id_key: String,
    pub client_secret_key: String,
    /// The credential's tokenURL; `None` for the controller's --token-url.
    pub token_url: Option<String>,
}

/// Why a credential gives no (good) token: a FiskilToken's Ready reason and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Trouble {
    pub reason: &'static str,
    pub message: String,
}

/// What the writers of one credential's FiskilTokens follow.
#[derive(Clone)]
pub(crate) struct Supply {
    /// The newest token (`None` before the first one, and while this replica does not lead).
    pub tokens: Tokens,
    /// What is wrong, if anything.
    pub trouble: watch::Receiver<Option<Trouble>>,
    /// When the next token request is due.
    pub next_refresh: watch::Receiver<Option<SystemTime>>,
}

/// What every exchange shares.
pub(crate) struct Shared {
    pub client: kube::Client,
    pub http: HttpSettings,
    pub leadership: Arc<Leadership>,
    pub metrics: Arc<ControllerMetrics>,
    pub tasks: TaskTracker,
}

/// A running exchange; dropping it stops its tasks.
pub(crate) struct Exchange {
    pub source: CredentialSource,
    pub supply: Supply,
    timing: watch::Sender<Timing>,
    stop: CancellationToken,
}

impl Drop for Exchange {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Exchange {
    /// Starts following the credential's Secret; the first token is requested once its values
    /// are read (and this replica leads).
    pub(crate) fn start(
        key: &CredentialKey,
        source: CredentialSource,
        timing: Timing,
        shared: &Arc<Shared>,
        stop: CancellationToken,
    ) -> Exchange {
        let (tokens, tokens_rx) = watch::channel(None);
        let (trouble, trouble_rx) = watch::channel(None);
        let (next, next_rx) = watch::channel(None);
        let (timing, timing_rx) = watch::channel(timing);
        let run = Run {
            label: key.to_string(),
            source: source.clone(),
            shared: Arc::clone(shared),
            timing: timing_rx,
            tokens: Some(tokens),
            trouble,
            next,
            stop: stop.clone(),
        };
        let span = tracing::info_span!("exchange", credential = %key);
        shared.tasks.spawn(run.run().instrument(span));
        Exchange {
            source,
            supply: Supply {
                tokens: tokens_rx,
                trouble: trouble_rx,
                next_refresh: next_rx,
            },
            timing,
            stop,
        }
    }

    /// Applies `timing` from the next request on.
    pub(crate) fn set_timing(&self, timing: Timing) {
        self.timing.send_if_modified(|current| {
            let changed = *current != timing;
            *current = timing;
            changed
        });
    }
}

/// The exchange's task: the Secret's watch, the refresh loop's reports, and the trouble they
/// add up to.
struct Run {
    label: String,
    source: CredentialSource,
    shared: Arc<Shared>,
    timing: watch::Receiver<Timing>,
    /// Handed to the refresh loop when it starts.
    tokens: Option<watch::Sender<Option<Arc<crate::fiskil::Token>>>>,
    trouble: watch::Sender<Option<Trouble>>,
    next: watch::Sender<Option<SystemTime>>,
    stop: CancellationToken,
}

impl Run {
    async fn run(mut self) {
        // Taken by the refresh loop when the first credentials are read.
        let mut client = match token_client(&self.shared.http, self.source.token_url.as_deref()) {
            Ok(client) => Some(client),
            Err(message) => {
                self.set_trouble(CREDENTIAL_INVALID, message);
                self.stop.cancelled().await;
                return;
            }
        };
        let secret = self.source.secret.clone();
        let api: Api<Secret> = Api::namespaced(self.shared.client.clone(), &secret.namespace);
        let config = watcher::Config::default().fields(&format!("metadata.name={}", secret.name));
        let mut events = std::pin::pin!(watcher(api, config).default_backoff());
        let mut credentials: Option<watch::Sender<Arc<Credentials>>> = None;
        let (happenings, mut reports) = Happenings::channel(8);
        let mut listed = false;
        loop {
            let event = tokio::select! {
                () = self.stop.cancelled() => return,
                Some(report) = reports.recv() => {
                    self.take_report(report);
                    continue;
                }
                event = events.next() => event,
            };
            let Some(event) = event else { return };
            let read = match event {
                Ok(watcher::Event::Init) => {
                    listed = false;
                    continue;
                }
                Ok(watcher::Event::InitDone) if listed => continue,
                Ok(watcher::Event::InitDone | watcher::Event::Delete(_)) => Err(format!(
                    "the Secret {}/{} does not exist; create it with the keys {} and {}",
                    secret.namespace,
                    secret.name,
                    self.source.client_id_key,
                    self.source.client_secret_key
                )),
                Ok(watcher::Event::InitApply(found) | watcher::Event::Apply(found)) => {
                    listed = true;
                    read_credentials(&found, &self.source)
                }
                // Credentials read before stay in use while the watch recovers.
                Err(e) if credentials.is_some() => {
                    tracing::warn!(error = %e, "watching the credential's Secret failed; retrying");
                    continue;
                }
                Err(e) => Err(format!(
                    "cannot read the Secret {}/{}: {e}",
                    secret.namespace, secret.name
                )),
            };
            let values = match read {
                Ok(values) => values,
                Err(message) => {
                    self.set_trouble(CREDENTIAL_INVALID, message);
                    continue;
                }
            };
            self.clear_trouble(CREDENTIAL_INVALID);
            match &credentials {
                Some(sender) => {
                    sender.send_if_modified(|held| {
                        let changed = **held != values;
                        if changed {
                            tracing::info!("the credentials changed; requesting a token with them");
                            *held = Arc::new(values);
                        }
                        changed
                    });
                }
                None => {
                    let (sender, receiver) = watch::channel(Arc::new(values));
                    credentials = Some(sender);
                    if let Some(client) = client.take() {
                        self.start_refresher(client, receiver, happenings.clone());
                    }
                }
            }
        }
    }

    /// Starts the refresh loop with the first credentials read.
    fn start_refresher(
        &mut self,
        client: TokenClient,
        credentials: watch::Receiver<Arc<Credentials>>,
        happenings: Happenings,
    ) {
        let Some(tokens) = self.tokens.take() else {
            return;
        };
        let refresher = Refresher {
            client,
            credentials,
            timing: self.timing.clone(),
            tokens,
            observer: Arc::new(CredentialObserver {
                label: self.label.clone(),
                metrics: Arc::clone(&self.shared.metrics),
                next: self.next.clone(),
            }),
            requests: Arc::new(RefreshRequests::default()),
            leadership: Arc::clone(&self.shared.leadership),
            happenings,
        };
        let span = tracing::Span::current();
        self.shared
            .tasks
            .spawn(refresher.run(self.stop.clone()).instrument(span));
    }

    /// The refresh loop's alarms become trouble; a token after failures clears them.
    fn take_report(&self, report: Happening) {
        match report {
            Happening::CredentialsRejected { error } => {
                self.set_trouble(CREDENTIALS_REJECTED, error);
            }
            Happening::TokenExpiringSoon { error, .. } => {
                self.set_trouble(ENDPOINT_UNAVAILABLE, error);
            }
            Happening::TokenRefreshed { .. } => {
                self.clear_trouble(CREDENTIALS_REJECTED);
                self.clear_trouble(ENDPOINT_UNAVAILABLE);
            }
            _ => {}
        }
    }

    fn set_trouble(&self, reason: &'static str, message: String) {
        let trouble = Trouble { reason, message };
        self.trouble.send_if_modified(|current| {
            let changed = current.as_ref() != Some(&trouble);
            if changed {
                tracing::warn!(reason, message = %trouble.message, "the credential gives no good token");
                *current = Some(trouble);
            }
            changed
        });
    }

    fn clear_trouble(&self, reason: &'static str) {
        self.trouble.send_if_modified(|current| {
            let clear = current.as_ref().is_some_and(|t| t.reason == reason);
            if clear {
                *current = None;
            }
            clear
        });
    }
}

/// The token client for a credential: the controller's settings, with the credential's
/// tokenURL when it names one (https:// only).
fn token_client(http: &HttpSettings, token_url: Option<&str>) -> Result<TokenClient, String> {
    let mut settings = http.clone();
    if let Some(raw) = token_url {
        let url = Url::parse(raw).map_err(|e| format!("tokenURL {raw:?} is not a URL: {e}"))?;
        if url.scheme() != "https" {
            return Err(format!("tokenURL {raw:?} is not an https:// URL"));
        }
        settings.token_url = url;
    }
    TokenClient::new(&settings).map_err(|e| format!("cannot set up the token client: {e}"))
}

/// The credentials in `secret` under the source's keys: UTF-8, trimmed, not empty, at most
/// [`MAX_CREDENTIAL_BYTES`]. Errors name the Secret and the key, never a value.
fn read_credentials(secret: &Secret, source: &CredentialSource) -> Result<Credentials, String> {
    let value = |key: &str| -> Result<SecretString, String> {
        let name = format!(
            "the key {key} of the Secret {}/{}",
            source.secret.namespace, source.secret.name
        );
        let bytes = secret
            .data
            .as_ref()
            .and_then(|data| data.get(key))
            .ok_or_else(|| format!("{name} is missing"))?;
        if bytes.0.len() as u64 > MAX_CREDENTIAL_BYTES {
            return Err(format!(
                "{name} is larger than {MAX_CREDENTIAL_BYTES} bytes"
            ));
        }
        let text =
            std::str::from_utf8(&bytes.0).map_err(|_| format!("{name} is not UTF-8 text"))?;
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(format!("{name} is empty"));
        }
        Ok(SecretString::from(trimmed))
    };
    Ok(Credentials {
        client_id: value(&source.client_id_key)?,
        client_secret: value(&source.client_secret_key)?,
    })
}

/// Reports one credential's requests and schedule to the metrics and its writers.
struct CredentialObserver {
    label: String,
    metrics: Arc<ControllerMetrics>,
    next: watch::Sender<Option<SystemTime>>,
}

impl Observer for CredentialObserver {
    fn requested(&self, result: RefreshResult, seconds: f64) {
        self.metrics.requested(&self.label, result, seconds);
    }

    fn refreshed(&self, expires_at: SystemTime) {
        self.metrics.set_expiry(&self.label, expires_at);
    }

    fn scheduled(&self, next: SystemTime) {
        self.metrics.set_next_refresh(&self.label, next);
        self.next.send_replace(Some(next));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use secrecy::ExposeSecret;

    fn source() -> CredentialSource {
        CredentialSource {
            secret: ObjectName {
                namespace: "ops".into(),
                name: "cred".into(),
            },
            client_id_key: "id".into(),
            client_secret_key: "secret".into(),
            token_url: None,
        }
    }

    fn secret(pairs: &[(&str, &[u8])]) -> Secret {
        Secret {
            data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), ByteString(v.to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        }
    }

    #[test]
    fn credentials_come_from_the_named_keys_and_errors_never_show_a_value() {
        let read = read_credentials(
            &secret(&[("id", b" client \n"), ("secret", b"sekrit-value")]),
            &source(),
        )
        .unwrap();
        assert_eq!(read.client_id.expose_secret(), "client");
        assert_eq!(read.client_secret.expose_secret(), "sekrit-value");
        let missing = read_credentials(&secret(&[("id", b"client")]), &source()).unwrap_err();
        assert_eq!(missing, "the key secret of the Secret ops/cred is missing");
        let empty = read_credentials(
            &secret(&[("id", b"client"), ("secret", b"  \n")]),
            &source(),
        )
        .unwrap_err();
        assert!(empty.ends_with("is empty"), "{empty}");
        let binary = read_credentials(
            &secret(&[("id", b"client"), ("secret", b"sekrit-\xff")]),
            &source(),
        )
        .unwrap_err();
        assert!(binary.ends_with("is not UTF-8 text") && !binary.contains("sekrit"));
        let huge = vec![b'x'; MAX_CREDENTIAL_BYTES as usize + 1];
        let too_big = read_credentials(&secret(&[("id", b"client"), ("secret", &huge)]), &source())
            .unwrap_err();
        assert!(too_big.contains("larger than"), "{too_big}");
    }

    #[test]
    fn a_credential_names_its_kind_namespace_and_name_in_the_metrics() {
        let namespaced = CredentialKey {
            kind: CredentialKind::FiskilCredential,
            namespace: Some("team".into()),
            name: "own".into(),
        };
        assert_eq!(namespaced.to_string(), "FiskilCredential/team/own");
        let cluster = CredentialKey {
            kind: CredentialKind::ClusterFiskilCredential,
            namespace: None,
            name: "shared".into(),
        };
        assert_eq!(cluster.to_string(), "ClusterFiskilCredential/shared");
    }
}
