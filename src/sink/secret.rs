//! The Kubernetes Secret output: server-side apply of the token keys under a named field
//! manager, leaving keys, labels and annotations that others own untouched.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{Patch, PatchParams};
use kube::Api;
use secrecy::ExposeSecret;

use crate::fiskil::Token;

/// The field manager that owns the keys this program writes.
pub const FIELD_MANAGER: &str = "fiskil-token-refresher";
/// The Secret key holding the token's expiry as RFC 3339.
pub const EXPIRES_AT_KEY: &str = "expires_at";
/// Where a pod finds its own namespace.
pub const SERVICE_ACCOUNT_NAMESPACE: &str =
    "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// The Kubernetes Secret output.
#[derive(clap::Args, Debug)]
#[command(next_help_heading = "Kubernetes Secret")]
pub struct SecretArgs {
    /// Also write the token into this Kubernetes Secret (server-side apply); enables the output
    #[arg(long, env = "FISKIL_SECRET_NAME", value_name = "NAME")]
    pub secret_name: Option<String>,

    /// Namespace of --secret-name [default: the pod's namespace, else the kubeconfig context's]
    #[arg(long, env = "FISKIL_SECRET_NAMESPACE", value_name = "NAMESPACE")]
    pub secret_namespace: Option<String>,

    /// Key of --secret-name that holds the token (the key expires_at holds its expiry)
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
    #[error("--secret-key {0:?} is not usable; use letters, digits, '-', '_' and '.', and not expires_at")]
    Key(String),
}

/// Where the token goes in Kubernetes.
#[derive(Debug, Clone)]
pub struct SecretOutput {
    pub name: String,
    pub namespace: Option<String>,
    pub key: String,
    /// Time allowed for one API server call.
    pub timeout: Duration,
}

impl SecretArgs {
    /// The Secret output, if `--secret-name` is given; `timeout` bounds each API call.
    pub fn output(self, timeout: Duration) -> Result<Option<SecretOutput>, SecretArgsError> {
        let Some(name) = self.secret_name else {
            return Ok(None);
        };
        if !dns_name(&name, true, 253) {
            return Err(SecretArgsError::Name(name));
        }
        if let Some(namespace) = &self.secret_namespace {
            if !dns_name(namespace, false, 63) {
                return Err(SecretArgsError::Namespace(namespace.clone()));
            }
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
            name,
            namespace: self.secret_namespace,
            key,
            timeout,
        }))
    }
}

/// A DNS label (`dots` false) or subdomain (`dots` true) of at most `max` characters.
fn dns_name(text: &str, dots: bool, max: usize) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    text.len() <= max
        && edge(text.chars().next())
        && edge(text.chars().last())
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (dots && c == '.'))
}

/// The Secret output cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum SecretSetupError {
    #[error("no Kubernetes connection for --secret-name: {0}; set KUBECONFIG, or run in a pod with a ServiceAccount")]
    NoCluster(String),
    #[error("cannot build the Kubernetes client: {0}")]
    Client(String),
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
pub struct SecretSink {
    api: Api<Secret>,
    name: String,
    namespace: String,
    key: String,
    timeout: Duration,
}

impl std::fmt::Debug for SecretSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SecretSink({}/{} key {})",
            self.namespace, self.name, self.key
        )
    }
}

impl SecretSink {
    /// Connects the usual way (KUBECONFIG or ~/.kube/config when present, else the pod's
    /// ServiceAccount) and settles the namespace. The client does not retry on its own: the
    /// output's backoff retries, always with the newest token.
    pub async fn new(output: &SecretOutput) -> Result<Self, SecretSetupError> {
        let mut config = kube::Config::infer()
            .await
            .map_err(|e| SecretSetupError::NoCluster(e.to_string()))?;
        config.default_retry = false;
        config.connect_timeout = Some(output.timeout);
        config.read_timeout = Some(output.timeout);
        config.write_timeout = Some(output.timeout);
        let namespace = infer_namespace(
            output.namespace.as_deref(),
            Path::new(SERVICE_ACCOUNT_NAMESPACE),
            &config.default_namespace,
        );
        let client =
            kube::Client::try_from(config).map_err(|e| SecretSetupError::Client(e.to_string()))?;
        tracing::info!(secret = %output.name, namespace = %namespace, key = %output.key, "writing the token to a Secret");
        Ok(SecretSink {
            api: Api::namespaced(client, &namespace),
            name: output.name.clone(),
            namespace,
            key: output.key.clone(),
            timeout: output.timeout,
        })
    }

    /// Applies the token and its expiry; creates the Secret if it does not exist.
    pub async fn write(&self, token: &Token) -> Result<(), SecretError> {
        let expires_at = humantime::format_rfc3339_millis(token.expires_at()).to_string();
        let secret = Secret {
            // No labels: the Secret may belong to a Helm release, whose managed-by label must
            // stay as Helm set it.
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
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
        let apply = self.api.patch(&self.name, &params, &patch);
        match tokio::time::timeout(self.timeout, apply).await {
            Ok(applied) => applied.map(drop).map_err(|e| self.classify(e)),
            Err(_) => Err(SecretError::TimedOut(self.timeout)),
        }
    }

    fn classify(&self, error: kube::Error) -> SecretError {
        match error {
            kube::Error::Api(status) if status.code == 403 => SecretError::Forbidden {
                namespace: self.namespace.clone(),
                name: self.name.clone(),
                message: status.message,
            },
            kube::Error::Api(status) => SecretError::Refused {
                namespace: self.namespace.clone(),
                name: self.name.clone(),
                code: status.code,
                reason: status.reason,
                message: status.message,
            },
            other => SecretError::Unreachable(other.to_string()),
        }
    }
}

/// The namespace to write in: the flag, else the pod's own namespace from its
/// ServiceAccount files, else the kubeconfig context's namespace.
pub fn infer_namespace(flag: Option<&str>, service_account_file: &Path, context: &str) -> String {
    if let Some(namespace) = flag {
        return namespace.to_owned();
    }
    std::fs::read_to_string(service_account_file)
        .ok()
        .map(|text| text.trim().to_owned())
        .filter(|text| !text.is_empty())
        .unwrap_or_else(|| context.to_owned())
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
                .output(Duration::from_secs(30))
        };
        assert!(parse(&[]).unwrap().is_none());
        let secret = parse(&["--secret-name", "fiskil-token"]).unwrap().unwrap();
        assert_eq!(
            (secret.name.as_str(), secret.key.as_str()),
            ("fiskil-token", "token")
        );
        assert!(secret.namespace.is_none());
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

    #[test]
    fn namespace_comes_from_the_flag_then_the_pod_then_the_context() {
        let dir = std::env::temp_dir().join(format!("fiskil-ns-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("namespace");
        assert_eq!(infer_namespace(None, &file, "from-context"), "from-context");
        std::fs::write(&file, "pod-namespace\n").unwrap();
        assert_eq!(
            infer_namespace(None, &file, "from-context"),
            "pod-namespace"
        );
        assert_eq!(infer_namespace(Some("flag"), &file, "from-context"), "flag");
        std::fs::write(&file, "  \n").unwrap();
        assert_eq!(infer_namespace(None, &file, "from-context"), "from-context");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn kubeconfig_context_namespace_is_the_fallback() {
        let dir = std::env::temp_dir().join(format!("fiskil-kubeconfig-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let kubeconfig = kube::config::Kubeconfig::from_yaml(
            r#"
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: not-a-real-token}}]
contexts: [{name: x, context: {cluster: c, user: u, namespace: team-a}}]
current-context: x
"#,
        )
        .unwrap();
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .unwrap();
        assert_eq!(
            infer_namespace(None, &dir.join("absent"), &config.default_namespace),
            "team-a"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
