//! The Kubernetes Secret output: server-side apply of the token keys under a named field
//! manager, leaving keys, labels and annotations that others own untouched.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::ByteString;
use kube::api::{Patch, PatchParams};
use kube::Api;
use secrecy::ExposeSecret;

use crate::cli::dns_name;
use crate::fiskil::Token;
use crate::happenings::ObjectName;
use crate::kubernetes::client::Kube;
use crate::leadership::Term;

/// The field manager that owns the keys this program writes.
pub(crate) const FIELD_MANAGER: &str = "fiskil-token-refresher";
/// The Secret key holding the token's expiry as RFC 3339.
pub(crate) const EXPIRES_AT_KEY: &str = "expires_at";
/// With leader election, the replica that wrote the token.
pub(crate) const WRITER_ANNOTATION: &str = "fiskil-token-refresher/writer";
/// With leader election, the Lease term (its `leaseTransitions`) the token was written in.
pub(crate) const TERM_ANNOTATION: &str = "fiskil-token-refresher/lease-term";

/// The Kubernetes Secret outputs.
#[derive(clap::Args, Debug)]
#[command(next_help_heading = "Kubernetes Secret")]
pub(crate) struct SecretArgs {
    /// Also write the token into this Kubernetes Secret (server-side apply); enables the output
    #[arg(long, env = "FISKIL_SECRET_NAME", value_name = "NAME")]
    pub secret_name: Option<String>,

    /// Namespace of --secret-name [default: the pod's namespace, else the kubeconfig context's]
    #[arg(long, env = "FISKIL_SECRET_NAMESPACE", value_name = "NAMESPACE")]
    pub secret_namespace: Option<String>,

    /// Also write the token into this Secret; repeat (or separate with commas) to fan one token
    /// out to many namespaces, each written on its own
    #[arg(
        long = "secret",
        env = "FISKIL_SECRETS",
        value_name = "NAMESPACE/NAME",
        value_delimiter = ','
    )]
    pub secrets: Vec<String>,

    /// Key of each Secret that holds the token (the key expires_at holds its expiry)
    #[arg(
        long,
        env = "FISKIL_SECRET_KEY",
        value_name = "KEY",
        default_value = "token"
    )]
    pub secret_key: String,
}

/// Secret options Kubernetes would refuse.
#[derive(Debug, thiserror::Error)]
pub enum SecretArgsError {
    #[error("--secret-name {0:?} is not a valid Secret name; use lowercase letters, digits, '-' and '.'")]
    Name(String),
    #[error(
        "--secret-namespace {0:?} is not a valid namespace; use lowercase letters, digits and '-'"
    )]
    Namespace(String),
    #[error("--secret {0:?} is not NAMESPACE/NAME; give a namespace (lowercase letters, digits, '-'), a slash and a Secret name")]
    Target(String),
    #[error("the Secret {0} is named twice; give each target once")]
    Twice(String),
    #[error("--secret-key {0:?} is not usable; use letters, digits, '-', '_' and '.', and not expires_at")]
    Key(String),
}

/// One Secret to write; without a namespace, the default namespace applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub namespace: Option<String>,
    pub name: String,
}

/// Where the token goes in Kubernetes.
#[derive(Debug, Clone)]
pub(crate) struct SecretOutput {
    pub targets: Vec<Target>,
    pub key: String,
    /// Time allowed for one API server call.
    pub timeout: Duration,
}

impl SecretArgs {
    /// The Secret outputs, if `--secret-name` or `--secret` is given; `timeout` bounds each API
    /// call.
    pub(crate) fn settings(
        self,
        timeout: Duration,
    ) -> Result<Option<SecretOutput>, SecretArgsError> {
        let mut targets = Vec::new();
        if let Some(name) = self.secret_name {
            if !dns_name(&name, true, 253) {
                return Err(SecretArgsError::Name(name));
            }
            if let Some(namespace) = &self.secret_namespace {
                if !dns_name(namespace, false, 63) {
                    return Err(SecretArgsError::Namespace(namespace.clone()));
                }
            }
            targets.push(Target {
                namespace: self.secret_namespace,
                name,
            });
        }
        for raw in self.secrets {
            let target = raw
                .split_once('/')
                .filter(|(namespace, name)| {
                    dns_name(namespace, false, 63) && dns_name(name, true, 253)
                })
                .map(|(namespace, name)| Target {
                    namespace: Some(namespace.to_owned()),
                    name: name.to_owned(),
                })
                .ok_or_else(|| SecretArgsError::Target(raw.clone()))?;
            if targets.contains(&target) {
                return Err(SecretArgsError::Twice(raw));
            }
            targets.push(target);
        }
        if targets.is_empty() {
            return Ok(None);
        }
        let key = self.secret_key;
        let key_ok = !key.is_empty()
            && key.len() <= 253
            && key != EXPIRES_AT_KEY
            && key != "."
            && key != ".."
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !key_ok {
            return Err(SecretArgsError::Key(key));
        }
        Ok(Some(SecretOutput {
            targets,
            key,
            timeout,
        }))
    }
}

/// A write to the Secret failed.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("forbidden to apply Secret {namespace}/{name} (verbs create and patch); bind this ServiceAccount to a Role with apiGroups [\"\"], resources [\"secrets\"], resourceNames [\"{name}\"], verbs [\"create\", \"patch\"] ({message})")]
    Forbidden {
        namespace: String,
        name: String,
        message: String,
    },
    #[error(
        "the API server refused the Secret {namespace}/{name} (HTTP {code} {reason}): {message}"
    )]
    Refused {
        namespace: String,
        name: String,
        code: u16,
        reason: String,
        message: String,
    },
    #[error("cannot reach the API server: {0}")]
    Unreachable(String),
    #[error("the API server did not answer within --request-timeout ({0:?})")]
    TimedOut(Duration),
}

/// Writes the token into one Secret.
#[derive(Clone)]
pub(crate) struct SecretSink {
    api: Api<Secret>,
    target: ObjectName,
    /// The output's name: `secret:NAMESPACE/NAME`.
    output: String,
    key: String,
    timeout: Duration,
    /// Cluster mode: the FiskilToken that owns the Secret.
    owner: Option<OwnerReference>,
}

/// Whether an existing Secret may be written by the owner a sink writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ownership {
    /// No such Secret: the first write creates it.
    Absent,
    /// The Secret names the owner among its owners.
    Owned,
    /// The Secret exists and belongs to someone else.
    Foreign,
}

impl std::fmt::Debug for SecretSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretSink({} key {})", self.output, self.key)
    }
}

impl SecretSink {
    /// One sink per target, sharing the client; a target without a namespace goes to the
    /// connection's default namespace.
    pub(crate) fn for_each_target(kube: &Kube, output: &SecretOutput) -> Vec<SecretSink> {
        output
            .targets
            .iter()
            .map(|target| {
                let namespace = target
                    .namespace
                    .clone()
                    .unwrap_or_else(|| kube.default_namespace.clone());
                tracing::info!(secret = %target.name, namespace = %namespace, key = %output.key, "writing the token to a Secret");
                SecretSink {
                    api: Api::namespaced(kube.client.clone(), &namespace),
                    output: format!("secret:{namespace}/{}", target.name),
                    target: ObjectName {
                        namespace,
                        name: target.name.clone(),
                    },
                    key: output.key.clone(),
                    timeout: output.timeout,
                    owner: None,
                }
            })
            .collect()
    }

    /// Cluster mode: a sink for `target` that records `owner` as the Secret's owner (so the
    /// garbage collector deletes the Secret with it), under the key `token`.
    pub(crate) fn owned(
        client: kube::Client,
        target: ObjectName,
        owner: OwnerReference,
        timeout: Duration,
    ) -> SecretSink {
        SecretSink {
            api: Api::namespaced(client, &target.namespace),
            output: format!("secret:{}/{}", target.namespace, target.name),
            target,
            key: "token".to_owned(),
            timeout,
            owner: Some(owner),
        }
    }

    /// Whether the Secret exists and, if so, whether it names this sink's owner.
    pub(crate) async fn ownership(&self) -> Result<Ownership, SecretError> {
        let read = self.api.get_metadata_opt(&self.target.name);
        let found = match tokio::time::timeout(self.timeout, read).await {
            Ok(found) => found.map_err(|e| self.classify(e))?,
            Err(_) => return Err(SecretError::TimedOut(self.timeout)),
        };
        let Some(found) = found else {
            return Ok(Ownership::Absent);
        };
        let ours = self.owner.as_ref().is_some_and(|owner| {
            found
                .metadata
                .owner_references
                .iter()
                .flatten()
                .any(|reference| reference.uid == owner.uid)
        });
        Ok(if ours {
            Ownership::Owned
        } else {
            Ownership::Foreign
        })
    }

    /// `secret:NAMESPACE/NAME`.
    pub(crate) fn name(&self) -> &str {
        &self.output
    }

    pub(crate) fn target(&self) -> &ObjectName {
        &self.target
    }

    /// Applies the token and its expiry; creates the Secret if it does not exist. With a
    /// leadership `term`, the writer and its term are recorded in annotations.
    pub(crate) async fn write(
        &self,
        token: &Token,
        term: Option<&Term>,
    ) -> Result<(), SecretError> {
        let expires_at = humantime::format_rfc3339_millis(token.expires_at()).to_string();
        let annotations = term.map(|term| {
            BTreeMap::from([
                (WRITER_ANNOTATION.to_owned(), term.identity.clone()),
                (TERM_ANNOTATION.to_owned(), term.number.to_string()),
            ])
        });
        let secret = Secret {
            // No labels: the Secret may belong to a Helm release, whose managed-by label must
            // stay as Helm set it.
            metadata: ObjectMeta {
                name: Some(self.target.name.clone()),
                namespace: Some(self.target.namespace.clone()),
                annotations,
                owner_references: self.owner.clone().map(|owner| vec![owner]),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([
                (
                    self.key.clone(),
                    ByteString(token.value.expose_secret().as_bytes().to_vec()),
                ),
                (
                    EXPIRES_AT_KEY.to_owned(),
                    ByteString(expires_at.into_bytes()),
                ),
            ])),
            ..Secret::default()
        };
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let patch = Patch::Apply(&secret);
        let apply = self.api.patch(&self.target.name, &params, &patch);
        match tokio::time::timeout(self.timeout, apply).await {
            Ok(applied) => applied.map(drop).map_err(|e| self.classify(e)),
            Err(_) => Err(SecretError::TimedOut(self.timeout)),
        }
    }

    fn classify(&self, error: kube::Error) -> SecretError {
        match error {
            kube::Error::Api(status) if status.code == 403 => SecretError::Forbidden {
                namespace: self.target.namespace.clone(),
                name: self.target.name.clone(),
                message: status.message,
            },
            kube::Error::Api(status) => SecretError::Refused {
                namespace: self.target.namespace.clone(),
                name: self.target.name.clone(),
                code: status.code,
                reason: status.reason,
                message: status.message,
            },
            other => SecretError::Unreachable(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_options_are_checked() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            secret: SecretArgs,
        }
        let parse = |argv: &[&str]| {
            let argv = std::iter::once("test").chain(argv.iter().copied());
            Cli::try_parse_from(argv)
                .unwrap()
                .secret
                .settings(Duration::from_secs(30))
        };
        assert!(parse(&[]).unwrap().is_none());
        let secret = parse(&["--secret-name", "fiskil-token"]).unwrap().unwrap();
        assert_eq!(
            secret.targets,
            [Target {
                namespace: None,
                name: "fiskil-token".into()
            }]
        );
        assert_eq!(secret.key, "token");
        let fan_out = parse(&[
            "--secret-name",
            "t",
            "--secret",
            "team-a/t",
            "--secret",
            "team-b/t,team-c/other",
        ])
        .unwrap()
        .unwrap();
        let named: Vec<_> = fan_out
            .targets
            .iter()
            .map(|t| (t.namespace.as_deref(), t.name.as_str()))
            .collect();
        assert_eq!(
            named,
            [
                (None, "t"),
                (Some("team-a"), "t"),
                (Some("team-b"), "t"),
                (Some("team-c"), "other")
            ]
        );
        for bad in ["team-a", "/t", "team-a/", "Team/t", "a.b/t", "a/b/c"] {
            assert!(
                matches!(parse(&["--secret", bad]), Err(SecretArgsError::Target(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            parse(&["--secret", "a/t", "--secret", "a/t"]),
            Err(SecretArgsError::Twice(_))
        ));
        assert!(matches!(
            parse(&["--secret-name", "Bad_Name"]),
            Err(SecretArgsError::Name(_))
        ));
        assert!(matches!(
            parse(&["--secret-name", "ok", "--secret-namespace", "a.b"]),
            Err(SecretArgsError::Namespace(_))
        ));
        for key in ["expires_at", "a/b", "..", ""] {
            assert!(matches!(
                parse(&["--secret-name", "ok", "--secret-key", key]),
                Err(SecretArgsError::Key(_))
            ));
        }
    }
}

#[cfg(test)]
#[path = "secret_api_tests.rs"]
mod api_tests;
