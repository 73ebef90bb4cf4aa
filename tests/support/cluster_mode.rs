//! Cluster mode on the control plane: the CustomResourceDefinitions installed from the Rust
//! types, the controller's identity holding the shipped ClusterRole and Lease Role, and the
//! custom resources as dynamic objects.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::Api;
use serde_json::json;

use super::control_plane::Cluster;
use super::{eventually_async, Daemon};

pub const GROUP: &str = "fiskil-token-refresher.io";
pub const VERSION: &str = "v1alpha1";

/// The shipped RBAC of cluster mode, read from the manifests in `deploy/controller/`: the
/// ClusterRole and the Lease Role.
fn shipped_rbac() -> (ClusterRole, Role) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/controller");
    let mut text = String::new();
    for entry in std::fs::read_dir(&dir).expect("deploy/controller") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            text.push_str("\n---\n");
            text.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
    let mut cluster_role = None;
    let mut role = None;
    for document in text.split("\n---") {
        let value: serde_json::Value = match serde_saphyr::from_str(document) {
            Ok(value) => value,
            Err(_) => continue,
        };
        match value["kind"].as_str() {
            Some("ClusterRole") => cluster_role = serde_json::from_value(value).ok(),
            Some("Role") => role = serde_json::from_value(value).ok(),
            _ => {}
        }
    }
    (
        cluster_role.expect("a ClusterRole in deploy/controller/"),
        role.expect("a Role in deploy/controller/"),
    )
}

/// Installs (server-side apply) the CustomResourceDefinitions the controller's types generate,
/// and waits until the API server serves them.
pub async fn install_definitions(cluster: &Cluster) {
    let api: Api<CustomResourceDefinition> = Api::all(cluster.admin.clone());
    for definition in fiskil_token_refresher::custom_resource_definitions() {
        let name = definition["metadata"]["name"].as_str().unwrap().to_owned();
        api.patch(
            &name,
            &PatchParams::apply("fiskil-tests").force(),
            &Patch::Apply(&definition),
        )
        .await
        .unwrap_or_else(|e| panic!("the API server refused the CRD {name}: {e}"));
        eventually_async(
            &format!("the CRD {name} established"),
            Duration::from_secs(30),
            || async {
                api.get(&name).await.ok().is_some_and(|crd| {
                    crd.status
                        .and_then(|s| s.conditions)
                        .unwrap_or_default()
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                })
            },
        )
        .await;
    }
}

/// A kind of the API group.
pub fn resource(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(GROUP, VERSION, kind))
}

/// The API of a namespaced kind in `namespace`, or of a cluster-scoped one.
pub fn api(cluster: &Cluster, kind: &str, namespace: Option<&str>) -> Api<DynamicObject> {
    let resource = resource(kind);
    match namespace {
        Some(namespace) => Api::namespaced_with(cluster.admin.clone(), namespace, &resource),
        None => Api::all_with(cluster.admin.clone(), &resource),
    }
}

/// Creates an object of the group from its JSON (kind, metadata and spec).
pub async fn create(
    cluster: &Cluster,
    object: serde_json::Value,
) -> Result<DynamicObject, kube::Error> {
    let kind = object["kind"].as_str().unwrap().to_owned();
    let namespace = object["metadata"]["namespace"].as_str().map(str::to_owned);
    let mut object = object;
    object["apiVersion"] = json!(format!("{GROUP}/{VERSION}"));
    let object: DynamicObject = serde_json::from_value(object).unwrap();
    api(cluster, &kind, namespace.as_deref())
        .create(&PostParams::default(), &object)
        .await
}

/// Deletes an object of the group; gone already is fine.
pub async fn delete(cluster: &Cluster, kind: &str, namespace: Option<&str>, name: &str) {
    let _ = api(cluster, kind, namespace)
        .delete(name, &DeleteParams::default())
        .await;
}

/// A namespace with labels.
pub async fn namespace(cluster: &Cluster, name: &str, labels: serde_json::Value) {
    let namespaces: Api<Namespace> = Api::all(cluster.admin.clone());
    let namespace: Namespace = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels}
    }))
    .unwrap();
    namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .expect("create namespace");
}

/// A Secret with string data.
pub async fn secret(cluster: &Cluster, namespace: &str, name: &str, data: serde_json::Value) {
    let secrets: Api<Secret> = Api::namespaced(cluster.admin.clone(), namespace);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": namespace},
        "stringData": data,
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("create Secret");
}

/// The controller's ServiceAccount in `namespace`, bound to the shipped ClusterRole and Lease
/// Role (renamed for this run); returns a kubeconfig that authenticates as it.
pub async fn controller_identity(cluster: &Cluster, namespace: &str, work: &Path) -> PathBuf {
    let run = format!("fiskil-controller-{namespace}");
    let accounts: Api<ServiceAccount> = Api::namespaced(cluster.admin.clone(), namespace);
    let account: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "controller"}})).unwrap();
    accounts
        .create(&PostParams::default(), &account)
        .await
        .expect("create ServiceAccount");
    let (mut cluster_role, mut role) = shipped_rbac();
    cluster_role.metadata.name = Some(run.clone());
    cluster_role.metadata.namespace = None;
    let cluster_roles: Api<ClusterRole> = Api::all(cluster.admin.clone());
    cluster_roles
        .create(&PostParams::default(), &cluster_role)
        .await
        .expect("create ClusterRole");
    let subject = json!([{"kind": "ServiceAccount", "name": "controller", "namespace": namespace}]);
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": run},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": run},
        "subjects": subject,
    }))
    .unwrap();
    Api::<ClusterRoleBinding>::all(cluster.admin.clone())
        .create(&PostParams::default(), &binding)
        .await
        .expect("create ClusterRoleBinding");
    role.metadata.name = Some("controller-lease".into());
    role.metadata.namespace = Some(namespace.to_owned());
    Api::<Role>::namespaced(cluster.admin.clone(), namespace)
        .create(&PostParams::default(), &role)
        .await
        .expect("create Role");
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "controller-lease"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "controller-lease"},
        "subjects": subject,
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(cluster.admin.clone(), namespace)
        .create(&PostParams::default(), &binding)
        .await
        .expect("create RoleBinding");
    let kubeconfig = work.join("controller.kubeconfig");
    cluster
        .kubeconfig_for(namespace, "controller", &kubeconfig)
        .await;
    kubeconfig
}

/// Removes the cluster-scoped RBAC objects [`controller_identity`] made.
pub async fn remove_identity(cluster: &Cluster, namespace: &str) {
    let run = format!("fiskil-controller-{namespace}");
    let _ = Api::<ClusterRoleBinding>::all(cluster.admin.clone())
        .delete(&run, &DeleteParams::default())
        .await;
    let _ = Api::<ClusterRole>::all(cluster.admin.clone())
        .delete(&run, &DeleteParams::default())
        .await;
}

/// Starts `fiskil-token-refresher controller` with `args`, as the identity in `kubeconfig`,
/// its pod in `namespace`.
pub fn spawn_controller(kubeconfig: &Path, namespace: &str, pod: &str, args: &[&str]) -> Daemon {
    let mut all = vec!["controller".to_owned()];
    all.extend(args.iter().map(|a| a.to_string()));
    Daemon::spawn(
        &all,
        &[
            ("KUBECONFIG", kubeconfig.to_str().unwrap()),
            ("POD_NAMESPACE", namespace),
            ("POD_NAME", pod),
        ],
    )
}

/// The Ready condition of a FiskilToken: status and reason.
pub fn ready(object: &DynamicObject) -> Option<(String, String)> {
    let conditions = object.data["status"]["conditions"].as_array()?;
    let ready = conditions.iter().find(|c| c["type"] == "Ready")?;
    Some((
        ready["status"].as_str()?.to_owned(),
        ready["reason"].as_str()?.to_owned(),
    ))
}
