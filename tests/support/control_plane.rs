//! A real control plane for tests: the admin client, a ServiceAccount identity holding only
//! the documented Role, and stopping and restarting the API server.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};

use super::{eventually_async, Daemon, Fixture};

/// The Secret the daemon writes in these tests.
pub const SECRET: &str = "fiskil-token";

/// The control plane started by `tests/cluster/up.sh`.
pub struct Cluster {
    pub dir: PathBuf,
    pub admin: Client,
}

impl Cluster {
    pub async fn connect() -> Cluster {
        let dir = PathBuf::from(
            std::env::var("FISKIL_CLUSTER_DIR")
                .expect("FISKIL_CLUSTER_DIR must name the directory given to tests/cluster/up.sh"),
        );
        let kubeconfig = Kubeconfig::read_from(dir.join("kubeconfig")).expect("admin kubeconfig");
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .expect("admin config");
        Cluster {
            admin: Client::try_from(config).expect("admin client"),
            dir,
        }
    }

    /// A fresh namespace with a ServiceAccount bound to the documented Role; returns a
    /// kubeconfig file that authenticates as that ServiceAccount.
    pub async fn namespace_with_identity(&self, name: &str, work: &Path) -> (String, PathBuf) {
        let namespace = format!("{name}-{}", std::process::id());
        let namespaces: Api<Namespace> = Api::all(self.admin.clone());
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .expect("create namespace");
        let accounts: Api<ServiceAccount> = Api::namespaced(self.admin.clone(), &namespace);
        let account = ServiceAccount {
            metadata: ObjectMeta {
                name: Some("refresher".into()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        };
        accounts
            .create(&PostParams::default(), &account)
            .await
            .expect("create ServiceAccount");
        self.grant(&namespace).await;
        let bindings: Api<RoleBinding> = Api::namespaced(self.admin.clone(), &namespace);
        let binding = RoleBinding {
            metadata: ObjectMeta {
                name: Some("refresher".into()),
                ..ObjectMeta::default()
            },
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "Role".into(),
                name: "refresher".into(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: "refresher".into(),
                namespace: Some(namespace.clone()),
                ..Subject::default()
            }]),
        };
        bindings
            .create(&PostParams::default(), &binding)
            .await
            .expect("create RoleBinding");

        let path = work.join("sa-kubeconfig");
        self.kubeconfig_for(&namespace, "refresher", &path).await;
        (namespace, path)
    }

    /// Writes a kubeconfig to `path` that authenticates as ServiceAccount `account` of
    /// `namespace` with a freshly minted token (two hours), its contexts defaulting to that
    /// namespace.
    pub async fn kubeconfig_for(&self, namespace: &str, account: &str, path: &Path) {
        let accounts: Api<ServiceAccount> = Api::namespaced(self.admin.clone(), namespace);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec![],
                expiration_seconds: Some(7200),
                ..TokenRequestSpec::default()
            },
            ..TokenRequest::default()
        };
        let minted: TokenRequest = accounts
            .create_subresource("token", account, &PostParams::default(), &request)
            .await
            .expect("TokenRequest");
        let token = minted.status.expect("token status").token;
        let mut kubeconfig = Kubeconfig::read_from(self.dir.join("kubeconfig")).unwrap();
        let user = kubeconfig.auth_infos.first_mut().expect("a user entry");
        let mut auth = user.auth_info.clone().unwrap_or_default();
        auth.client_certificate = None;
        auth.client_certificate_data = None;
        auth.client_key = None;
        auth.client_key_data = None;
        auth.token = Some(token.into());
        user.auth_info = Some(auth);
        for context in &mut kubeconfig.contexts {
            if let Some(c) = context.context.as_mut() {
                c.namespace = Some(namespace.to_owned());
            }
        }
        std::fs::write(path, serde_json::to_vec(&kubeconfig).unwrap()).unwrap();
    }

    /// The Role the README documents: create and patch on the one Secret, nothing else.
    pub async fn grant(&self, namespace: &str) {
        let roles: Api<Role> = Api::namespaced(self.admin.clone(), namespace);
        let role = Role {
            metadata: ObjectMeta {
                name: Some("refresher".into()),
                ..ObjectMeta::default()
            },
            rules: Some(vec![PolicyRule {
                api_groups: Some(vec!["".into()]),
                resources: Some(vec!["secrets".into()]),
                resource_names: Some(vec![SECRET.into()]),
                verbs: vec!["create".into(), "patch".into()],
                ..PolicyRule::default()
            }]),
        };
        roles
            .create(&PostParams::default(), &role)
            .await
            .expect("create Role");
    }

    pub async fn revoke(&self, namespace: &str) {
        let roles: Api<Role> = Api::namespaced(self.admin.clone(), namespace);
        roles
            .delete("refresher", &DeleteParams::default())
            .await
            .expect("delete Role");
    }

    pub async fn secret(&self, namespace: &str) -> Option<Secret> {
        let secrets: Api<Secret> = Api::namespaced(self.admin.clone(), namespace);
        secrets.get_opt(SECRET).await.ok().flatten()
    }

    pub async fn token_in_secret(&self, namespace: &str) -> Option<String> {
        let data = self.secret(namespace).await?.data?;
        Some(String::from_utf8(data.get("token")?.0.clone()).unwrap())
    }
}

pub fn spawn_with_identity(
    fixture: &Fixture,
    kubeconfig: &Path,
    namespace: &str,
    extra: &[&str],
) -> Daemon {
    let mut args = fixture.base_args();
    args.extend(["--secret-name", SECRET, "--secret-namespace", namespace].map(String::from));
    args.extend(extra.iter().map(|s| s.to_string()));
    Daemon::spawn(&args, &[("KUBECONFIG", kubeconfig.to_str().unwrap())])
}

/// The running kube-apiserver's pid and command line, from the pid file up.sh wrote.
fn apiserver(dir: &Path) -> (u32, Vec<String>) {
    let pid: u32 = std::fs::read_to_string(dir.join("kube-apiserver.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let args = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    (pid, args)
}

impl Cluster {
    /// Stops the API server (etcd keeps running); returns its command line for [`Self::start_apiserver`].
    pub fn stop_apiserver(&self) -> Vec<String> {
        let (pid, args) = apiserver(&self.dir);
        std::process::Command::new("kill")
            .arg(pid.to_string())
            .status()
            .unwrap();
        super::eventually("the API server to stop", Duration::from_secs(20), || {
            !Path::new(&format!("/proc/{pid}")).exists()
        });
        args
    }

    /// Starts the API server again with the same command line and waits until its /readyz
    /// is ok (every post-start hook done, RBAC roles included); returns how long that took.
    pub async fn start_apiserver(&self, args: &[String]) -> Duration {
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.join("kube-apiserver.log"))
            .unwrap();
        let mut child = std::process::Command::new(&args[0])
            .args(&args[1..])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("restart the API server");
        std::fs::write(self.dir.join("kube-apiserver.pid"), child.id().to_string()).unwrap();
        std::thread::spawn(move || child.wait());
        let started = Instant::now();
        eventually_async(
            "the API server ready again",
            Duration::from_secs(60),
            || async {
                let readyz = hyper::Request::get("/readyz").body(Vec::new()).unwrap();
                self.admin
                    .request_text(readyz)
                    .await
                    .is_ok_and(|body| body == "ok")
            },
        )
        .await;
        started.elapsed()
    }
}
