{{/*
Chart name, truncated to the 63 characters a label value allows.
*/}}
{{- define "fiskil-token-refresher.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: the release name, plus the chart name unless the
release name already contains it. Truncated to 63 characters because some
Kubernetes name fields are limited to that (DNS-1123 labels).
*/}}
{{- define "fiskil-token-refresher.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Name of the example workload (the sidecar pattern).
*/}}
{{- define "fiskil-token-refresher.exampleName" -}}
{{- printf "%s-example" (include "fiskil-token-refresher.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "fiskil-token-refresher.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels shared by every object: pass a dict with "ctx" (the root context) and
"component".
*/}}
{{- define "fiskil-token-refresher.labels" -}}
helm.sh/chart: {{ include "fiskil-token-refresher.chart" .ctx }}
{{ include "fiskil-token-refresher.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Values.image.tag | default .ctx.Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/part-of: fiskil-token-refresher
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- end }}

{{/*
Selector labels: pass a dict with "ctx" and "component".
*/}}
{{- define "fiskil-token-refresher.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fiskil-token-refresher.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
"true" when the standalone Secret writer is rendered: standalone.enabled, and
not cluster mode (controller.enabled replaces the writer).
*/}}
{{- define "fiskil-token-refresher.writer" -}}
{{- if and .Values.standalone.enabled (not .Values.controller.enabled) -}}
true
{{- end }}
{{- end }}

{{/*
The component whose pods the shared objects (ServiceAccount, Service,
ServiceMonitor, NetworkPolicy) are for: "controller" in cluster mode,
"secret-writer" with the standalone writer, else empty (none of them).
*/}}
{{- define "fiskil-token-refresher.component" -}}
{{- if .Values.controller.enabled -}}
controller
{{- else if .Values.standalone.enabled -}}
secret-writer
{{- end }}
{{- end }}

{{/*
Name of the controller's objects (Deployment, ClusterRole, ClusterRoleBinding,
PodDisruptionBudget) and of its Lease.
*/}}
{{- define "fiskil-token-refresher.controllerName" -}}
{{- printf "%s-controller" (include "fiskil-token-refresher.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
ServiceAccount of the standalone Secret writer, or of the controller.
*/}}
{{- define "fiskil-token-refresher.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "fiskil-token-refresher.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Secret holding client_id / client_secret: the existing one, or the one this
chart creates from credentials.clientId / credentials.clientSecret, or (when
neither is given) "<fullname>-credentials", to be created by the user.
*/}}
{{- define "fiskil-token-refresher.credentialsSecretName" -}}
{{- if .Values.credentials.existingSecret }}
{{- .Values.credentials.existingSecret }}
{{- else }}
{{- printf "%s-credentials" (include "fiskil-token-refresher.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/*
True ("true") when the chart creates the credentials Secret itself.
*/}}
{{- define "fiskil-token-refresher.createCredentialsSecret" -}}
{{- if and (not .Values.credentials.existingSecret) .Values.credentials.clientId .Values.credentials.clientSecret -}}
true
{{- end }}
{{- end }}

{{/*
Key names inside the credentials Secret. A Secret created by this chart always
uses client_id / client_secret.
*/}}
{{- define "fiskil-token-refresher.clientIdKey" -}}
{{- if .Values.credentials.existingSecret }}{{ .Values.credentials.clientIdKey }}{{ else }}client_id{{ end }}
{{- end }}
{{- define "fiskil-token-refresher.clientSecretKey" -}}
{{- if .Values.credentials.existingSecret }}{{ .Values.credentials.clientSecretKey }}{{ else }}client_secret{{ end }}
{{- end }}

{{/*
The Secret the standalone writer keeps the token in.
*/}}
{{- define "fiskil-token-refresher.tokenSecretName" -}}
{{- if .Values.tokenSecret.name }}
{{- .Values.tokenSecret.name }}
{{- else }}
{{- printf "%s-token" (include "fiskil-token-refresher.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "fiskil-token-refresher.tokenSecretNamespace" -}}
{{- default .Release.Namespace .Values.tokenSecret.namespace }}
{{- end }}

{{/*
Every Secret the standalone writer keeps the token in, as a JSON list of
{"namespace", "name"}: the entries of tokenSecret.targets (name defaulting to
the tokenSecret name), or the one tokenSecret. Read it with fromJsonArray.
*/}}
{{- define "fiskil-token-refresher.secretTargets" -}}
{{- $default := include "fiskil-token-refresher.tokenSecretName" . }}
{{- $targets := list }}
{{- if .Values.tokenSecret.targets }}
{{- range .Values.tokenSecret.targets }}
{{- $targets = append $targets (dict "namespace" .namespace "name" (default $default .name)) }}
{{- end }}
{{- else }}
{{- $targets = append $targets (dict "namespace" (include "fiskil-token-refresher.tokenSecretNamespace" .) "name" $default) }}
{{- end }}
{{- toJson $targets }}
{{- end }}

{{/*
Name of the Lease the writer's replicas elect a leader with.
*/}}
{{- define "fiskil-token-refresher.leaseName" -}}
{{- default (include "fiskil-token-refresher.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/*
Environment from the downward API: the pod's name (the leader election
identity), namespace (the Lease's and the Events') and UID (so that
"kubectl describe pod" lists the Events about it).
*/}}
{{- define "fiskil-token-refresher.podEnv" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: POD_UID
  valueFrom:
    fieldRef:
      fieldPath: metadata.uid
{{- end }}

{{/*
RBAC verbs the standalone writer needs on its one target Secret (the Role is
restricted to it with resourceNames). This is the single place to change them.
The writer sends a server-side apply: a PATCH (application/apply-patch+yaml)
whose URL carries the name. It needs "patch" to update the Secret and, when the
Secret does not exist yet, "create" as well: the API server authorizes an apply
that creates as a create. Both checks carry the name, so resourceNames holds,
and a POST create (no name in its URL) stays forbidden.
tests/deploy/dry-run.sh checks this against a real API server.
*/}}
{{- define "fiskil-token-refresher.secretVerbs" -}}
- create
- patch
{{- end }}

{{/*
RBAC rules for the leader election Lease. The writer reads and renews the
Lease by name (get, update, limited by resourceNames), followers watch it by
name (a metadata.name field selector, so a release is seen at once), and the
writer creates it when it is missing. The API server cannot limit a create by name (a POST carries no
name in its URL), so "create" is a rule of its own without resourceNames.
*/}}
{{- define "fiskil-token-refresher.leaseRules" -}}
{{- include "fiskil-token-refresher.leaseRulesFor" (include "fiskil-token-refresher.leaseName" .) }}
{{- end }}

{{/*
The same rules for the Lease named by the argument (a string).
*/}}
{{- define "fiskil-token-refresher.leaseRulesFor" -}}
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  resourceNames:
    - {{ . | quote }}
  verbs: ["get", "update", "watch"]
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["create"]
{{- end }}

{{/*
The controller's ClusterRole rules, the least that cluster mode needs:
- its custom resources: get, list and watch; patch of fiskiltokens/status
  (server-side apply of the status);
- namespaces: get, list and watch, to match ClusterFiskilCredential
  allowedNamespaces.selector against namespace labels;
- secrets: get, list and watch (it lists and watches with a metadata.name field
  selector, one credential Secret at a time; RBAC cannot limit that by name),
  create and patch (server-side apply of each FiskilToken's Secret). No delete:
  the Secrets carry an ownerReference to their FiskilToken, and the garbage
  collector deletes them with it;
- events.k8s.io events: create, and patch to fold repeats into a series.
deploy/controller/clusterrole.yaml holds the same rules (tests/deploy/chart.sh
compares them).
*/}}
{{- define "fiskil-token-refresher.controllerRules" -}}
- apiGroups: ["fiskil-token-refresher.io"]
  resources: ["fiskiltokens", "fiskilcredentials", "clusterfiskilcredentials"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["fiskil-token-refresher.io"]
  resources: ["fiskiltokens/status"]
  verbs: ["patch"]
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/*
RBAC rule for Events: the daemon creates an events.k8s.io/v1 Event per state
change and patches its series when the change repeats.
*/}}
{{- define "fiskil-token-refresher.eventRules" -}}
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/*
Container image reference: repository:tag, or repository@digest when a digest
is given.
*/}}
{{- define "fiskil-token-refresher.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
Checks of values that the JSON schema cannot express. Included by every
template that renders the refresher, so a bad combination fails the render.
*/}}
{{- define "fiskil-token-refresher.validate" -}}
{{- if ge (float64 .Values.refreshJitter) (float64 .Values.refreshRatio) }}
{{- fail (printf "refreshJitter (%v) must be less than refreshRatio (%v)" .Values.refreshJitter .Values.refreshRatio) }}
{{- end }}
{{- if and (not .Values.credentials.existingSecret) (or .Values.credentials.clientId .Values.credentials.clientSecret) (not (and .Values.credentials.clientId .Values.credentials.clientSecret)) }}
{{- fail "credentials: give both clientId and clientSecret, or neither (and set existingSecret or create the Secret yourself)" }}
{{- end }}
{{- if and .Values.ca.configMap .Values.ca.secret }}
{{- fail "ca: set configMap or secret, not both" }}
{{- end }}
{{- if and (include "fiskil-token-refresher.writer" .) (gt (int .Values.standalone.replicas) 1) (not .Values.leaderElection.enabled) }}
{{- fail (printf "standalone.replicas is %v but leaderElection.enabled is false: replicas without leader election would all write the Secret; set leaderElection.enabled: true or standalone.replicas: 1" .Values.standalone.replicas) }}
{{- end }}
{{- if and .Values.tokenSecret.targets .Values.tokenSecret.namespace }}
{{- fail "tokenSecret.namespace is not used when tokenSecret.targets is set: give each target its namespace and leave tokenSecret.namespace empty" }}
{{- end }}
{{- $seen := dict }}
{{- range (include "fiskil-token-refresher.secretTargets" . | fromJsonArray) }}
{{- $key := printf "%s/%s" .namespace .name }}
{{- if hasKey $seen $key }}
{{- fail (printf "tokenSecret.targets: %s is listed twice (a target's name defaults to tokenSecret.name); list each Secret once" $key) }}
{{- end }}
{{- $_ := set $seen $key true }}
{{- end }}
{{- with .Values.example }}
{{- if and .notify.signal (not .notify.pidFile) }}
{{- fail "example.notify.signal needs example.notify.pidFile, the pid file the app writes" }}
{{- end }}
{{- if and .tokenEndpoint.port .proxy.port (eq (int .tokenEndpoint.port) (int .proxy.port)) }}
{{- fail "example.tokenEndpoint.port and example.proxy.port must differ" }}
{{- end }}
{{- range list .tokenEndpoint.port .proxy.port }}
{{- if and . (eq (int .) (int $.Values.port)) }}
{{- fail (printf "example.tokenEndpoint.port and example.proxy.port must differ from port (%v), the health and metrics port" $.Values.port) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Checks of the controller's values that the JSON schema cannot express.
*/}}
{{- define "fiskil-token-refresher.validateController" -}}
{{- with .Values.controller }}
{{- if and (gt (int .replicas) 1) (ge (int .pdb.minAvailable) (int .replicas)) }}
{{- fail (printf "controller.pdb.minAvailable (%v) must be below controller.replicas (%v): the PodDisruptionBudget would block every drain" .pdb.minAvailable .replicas) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The controller's arguments: the subcommand, leader election, the token
endpoint, the timings, the listen address, logging and the CA bundle.
*/}}
{{- define "fiskil-token-refresher.controllerArgs" -}}
- controller
- --leader-elect
- {{ printf "--lease-name=%s" (include "fiskil-token-refresher.controllerName" .) | quote }}
- {{ printf "--lease-duration=%s" .Values.controller.leaderElection.leaseDuration | quote }}
- {{ printf "--token-url=%s" .Values.tokenUrl | quote }}
- {{ printf "--refresh-ratio=%v" .Values.refreshRatio | quote }}
- {{ printf "--refresh-jitter=%v" .Values.refreshJitter | quote }}
- {{ printf "--min-refresh-interval=%s" .Values.minRefreshInterval | quote }}
- {{ printf "--backoff-initial=%s" .Values.backoffInitial | quote }}
- {{ printf "--backoff-max=%s" .Values.backoffMax | quote }}
- {{ printf "--backoff-max-expired=%s" .Values.backoffMaxExpired | quote }}
- {{ printf "--connect-timeout=%s" .Values.connectTimeout | quote }}
- {{ printf "--request-timeout=%s" .Values.requestTimeout | quote }}
- {{ printf "--listen=[::]:%v" .Values.port | quote }}
- {{ printf "--log-format=%s" .Values.logFormat | quote }}
- {{ printf "--log-level=%s" .Values.logLevel | quote }}
{{- if or .Values.ca.configMap .Values.ca.secret }}
- {{ printf "--ca-file=/etc/fiskil/ca/%s" .Values.ca.key | quote }}
{{- end }}
{{- with .Values.controller.extraArgs }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Container arguments shared by the standalone writer and the sidecar: the
endpoint, the timings, logging, the listen address and the CA bundle.
*/}}
{{- define "fiskil-token-refresher.commonArgs" -}}
- {{ printf "--token-url=%s" .Values.tokenUrl | quote }}
- --client-id-file=/var/run/secrets/fiskil/client_id
- --client-secret-file=/var/run/secrets/fiskil/client_secret
- {{ printf "--refresh-ratio=%v" .Values.refreshRatio | quote }}
- {{ printf "--refresh-jitter=%v" .Values.refreshJitter | quote }}
- {{ printf "--min-refresh-interval=%s" .Values.minRefreshInterval | quote }}
- {{ printf "--backoff-initial=%s" .Values.backoffInitial | quote }}
- {{ printf "--backoff-max=%s" .Values.backoffMax | quote }}
- {{ printf "--backoff-max-expired=%s" .Values.backoffMaxExpired | quote }}
- {{ printf "--connect-timeout=%s" .Values.connectTimeout | quote }}
- {{ printf "--request-timeout=%s" .Values.requestTimeout | quote }}
- {{ printf "--credentials-poll-interval=%s" .Values.credentialsPollInterval | quote }}
- {{ printf "--listen=[::]:%v" .Values.port | quote }}
- {{ printf "--log-format=%s" .Values.logFormat | quote }}
- {{ printf "--log-level=%s" .Values.logLevel | quote }}
{{- if or .Values.ca.configMap .Values.ca.secret }}
- {{ printf "--ca-file=/etc/fiskil/ca/%s" .Values.ca.key | quote }}
{{- end }}
{{- end }}

{{/*
Environment shared by both containers: proxy settings and extraEnv.
*/}}
{{- define "fiskil-token-refresher.env" -}}
{{- if .Values.proxy.httpsProxy }}
- name: HTTPS_PROXY
  value: {{ .Values.proxy.httpsProxy | quote }}
{{- end }}
{{- if .Values.proxy.noProxy }}
- name: NO_PROXY
  value: {{ .Values.proxy.noProxy | quote }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
The CA bundle's volume mount and volume (the controller's only ones), when
ca.configMap or ca.secret is set.
*/}}
{{- define "fiskil-token-refresher.caVolumeMount" -}}
{{- if or .Values.ca.configMap .Values.ca.secret }}
- name: fiskil-ca
  mountPath: /etc/fiskil/ca
  readOnly: true
{{- end }}
{{- end }}
{{- define "fiskil-token-refresher.caVolume" -}}
{{- if .Values.ca.configMap }}
- name: fiskil-ca
  configMap:
    name: {{ .Values.ca.configMap }}
    items:
      - key: {{ .Values.ca.key }}
        path: {{ .Values.ca.key }}
{{- else if .Values.ca.secret }}
- name: fiskil-ca
  secret:
    secretName: {{ .Values.ca.secret }}
    items:
      - key: {{ .Values.ca.key }}
        path: {{ .Values.ca.key }}
{{- end }}
{{- end }}

{{/*
Volume mounts shared by both containers.
*/}}
{{- define "fiskil-token-refresher.volumeMounts" -}}
- name: fiskil-credentials
  mountPath: /var/run/secrets/fiskil
  readOnly: true
{{- include "fiskil-token-refresher.caVolumeMount" . }}
{{- end }}

{{/*
Volumes shared by both pods.
*/}}
{{- define "fiskil-token-refresher.volumes" -}}
- name: fiskil-credentials
  secret:
    secretName: {{ include "fiskil-token-refresher.credentialsSecretName" . }}
    defaultMode: 0440
    items:
      - key: {{ include "fiskil-token-refresher.clientIdKey" . }}
        path: client_id
      - key: {{ include "fiskil-token-refresher.clientSecretKey" . }}
        path: client_secret
{{- include "fiskil-token-refresher.caVolume" . }}
{{- end }}

{{/*
The refresher container's fields other than name, args and probes: image,
ports, env, resources, securityContext. Pass a dict with "ctx" (the root
context) and "podEnv" (true: add POD_NAME, POD_NAMESPACE and POD_UID), and
optionally "resources" (default: the resources value).
*/}}
{{- define "fiskil-token-refresher.containerCommon" -}}
{{- $ctx := .ctx -}}
image: {{ include "fiskil-token-refresher.image" $ctx }}
imagePullPolicy: {{ $ctx.Values.image.pullPolicy }}
ports:
  - name: http-metrics
    containerPort: {{ $ctx.Values.port }}
    protocol: TCP
{{- $env := include "fiskil-token-refresher.env" $ctx }}
{{- if or .podEnv $env }}
env:
{{- if .podEnv }}
{{- include "fiskil-token-refresher.podEnv" $ctx | nindent 2 }}
{{- end }}
{{- with $env }}
{{- . | nindent 2 }}
{{- end }}
{{- end }}
resources:
  {{- toYaml (.resources | default $ctx.Values.resources) | nindent 2 }}
securityContext:
  {{- toYaml $ctx.Values.securityContext | nindent 2 }}
{{- end }}

{{/*
Liveness and readiness probes (the sidecar adds a startupProbe).
*/}}
{{- define "fiskil-token-refresher.probes" -}}
livenessProbe:
  httpGet:
    path: /healthz
    port: http-metrics
  {{- toYaml .Values.livenessProbe | nindent 2 }}
readinessProbe:
  httpGet:
    path: /readyz
    port: http-metrics
  {{- toYaml .Values.readinessProbe | nindent 2 }}
{{- end }}

{{/*
Prometheus scrape annotations, when metrics.scrapeAnnotations is true.
*/}}
{{- define "fiskil-token-refresher.scrapeAnnotations" -}}
{{- if .Values.metrics.scrapeAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .Values.port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end }}

{{/*
PromQL label matchers that pick this release's refresher series in the alerts:
prometheusRule.selector, or by default the job a ServiceMonitor gives them (the
Service name) and the release namespace.
*/}}
{{- define "fiskil-token-refresher.alertSelector" -}}
{{- default (printf "job=%q,namespace=%q" (include "fiskil-token-refresher.fullname" .) .Release.Namespace) .Values.prometheusRule.selector }}
{{- end }}

{{/*
Labels of one alert: pass a dict with "ctx" and "severity".
*/}}
{{- define "fiskil-token-refresher.alertLabels" -}}
severity: {{ .severity }}
{{- with .ctx.Values.prometheusRule.additionalAlertLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
The description of one alert, ending with where its runbook is, and its
runbook_url when prometheusRule.runbookUrl is set: pass a dict with "ctx",
"alert" (the alert name, also the runbook heading) and "text".
*/}}
{{- define "fiskil-token-refresher.alertAnnotations" -}}
{{- $base := .ctx.Values.prometheusRule.runbookUrl }}
{{- if $base }}
description: {{ printf "%s Runbook: %s#%s" .text $base (lower .alert) | quote }}
runbook_url: {{ printf "%s#%s" $base (lower .alert) | quote }}
{{- else }}
description: {{ printf "%s Runbook: the fiskil-token-refresher chart README, section \"Alert runbook\", %s." .text .alert | quote }}
{{- end }}
{{- end }}
