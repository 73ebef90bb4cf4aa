{{/*
Sidecar injection (injection.enabled): helpers of templates/injection.yaml.
*/}}

{{/*
Pod annotations read by the injection policy. The names are documented in the
chart README ("Add the sidecar with one label").
*/}}
{{- define "fiskil-token-refresher.injectionAnnotation" -}}
{{- printf "fiskil-token-refresher.io/%s" . }}
{{- end }}

{{/*
A value rendered as a CEL literal, for the policy's expressions: pass a dict
with "value" (from fromYaml, the chart's helpers' output), "type" (the CEL type
of an object, e.g. Object.spec.initContainers; nested fields get
<type>.<field>) and "map" (true: a map of strings, such as resources.limits,
not an object). A dict {"__cel": EXPR} is EXPR itself, for values known only at
admission (the annotations). Numbers are integers: a container has no
fractional fields.
*/}}
{{- define "fiskil-token-refresher.cel" -}}
{{- $v := .value }}
{{- $t := .type }}
{{- if kindIs "map" $v }}
{{- if hasKey $v "__cel" }}
{{- get $v "__cel" }}
{{- else if .map }}
{{- "{" }}
{{- range $i, $k := keys $v | sortAlpha }}{{ if $i }}, {{ end }}{{ toJson $k }}: {{ toJson (toString (get $v $k)) }}{{ end }}
{{- "}" }}
{{- else }}
{{- $t }}{{ "{" }}
{{- range $i, $k := keys $v | sortAlpha }}{{ if $i }}, {{ end }}{{ $k }}: {{ include "fiskil-token-refresher.cel" (dict "value" (get $v $k) "type" (printf "%s.%s" $t $k) "map" (has $k (list "limits" "requests"))) }}{{ end }}
{{- "}" }}
{{- end }}
{{- else if kindIs "slice" $v }}
{{- "[" }}
{{- range $i, $e := $v }}{{ if $i }}, {{ end }}{{ include "fiskil-token-refresher.cel" (dict "value" $e "type" $t) }}{{ end }}
{{- "]" }}
{{- else if kindIs "string" $v }}
{{- toJson $v }}
{{- else if kindIs "bool" $v }}
{{- ternary "true" "false" $v }}
{{- else }}
{{- int64 $v }}
{{- end }}
{{- end }}

{{/*
CEL: the value of pod annotation NAME (a string), as an optional.
*/}}
{{- define "fiskil-token-refresher.celAnnotation" -}}
{{- printf "object.metadata.?annotations[?%s]" (include "fiskil-token-refresher.injectionAnnotation" . | toJson) }}
{{- end }}

{{/*
The checks of the pod annotations, as a YAML list of {name, expression,
message}: the ValidatingAdmissionPolicy refuses a labelled pod for which an
expression is false, with its message (which names the annotation), and the
MutatingAdmissionPolicy leaves such a pod alone, so that the refusal is the
one error the pod's author sees. Each expression holds when the annotation is
absent.
*/}}
{{- define "fiskil-token-refresher.injectionChecks" -}}
{{- $a := dict }}
{{- range list "credentials-secret" "token-file" "containers" "token-endpoint-port" "proxy-port" "proxy-upstream" }}
{{- $_ := set $a . (include "fiskil-token-refresher.celAnnotation" .) }}
{{- end }}
{{- $port := int .Values.port }}
- name: credentials-secret
  expression: >-
    {{ get $a "credentials-secret" }}.orValue("x").matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')
    && size({{ get $a "credentials-secret" }}.orValue("x")) <= 253
  message: >-
    annotation {{ include "fiskil-token-refresher.injectionAnnotation" "credentials-secret" }} must name a Secret
    in the pod's namespace (a DNS subdomain: lower-case letters, digits, '-' and '.')
- name: token-file
  expression: >-
    {{ get $a "token-file" }}.orValue("/x/x").matches('^(/[A-Za-z0-9_][A-Za-z0-9._-]*){2,}$')
    && !({{ get $a "token-file" }}.orValue("/x/x").substring(0, {{ get $a "token-file" }}.orValue("/x/x").lastIndexOf("/"))
    in ["/var/run/secrets/fiskil", "/etc/fiskil/ca", "/var/run/secrets/kubernetes.io/serviceaccount"])
  message: >-
    annotation {{ include "fiskil-token-refresher.injectionAnnotation" "token-file" }} must be an absolute file path
    below a directory (e.g. /var/run/fiskil/token; letters, digits, '.', '_' and '-', no '..'), and its directory
    must not be /var/run/secrets/fiskil, /etc/fiskil/ca or the ServiceAccount token's
- name: containers
  expression: >-
    !{{ get $a "containers" }}.hasValue()
    || ({{ get $a "containers" }}.value().matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(,[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')
    && {{ get $a "containers" }}.value().split(",").all(n, object.spec.containers.exists(c, c.name == n)))
  message: >-
    annotation {{ include "fiskil-token-refresher.injectionAnnotation" "containers" }} must list, separated by
    commas without spaces, names of the pod's containers (spec.containers) that get the token volume
- name: token-endpoint-port
  expression: >-
    !{{ get $a "token-endpoint-port" }}.hasValue()
    || ({{ get $a "token-endpoint-port" }}.value().matches('^([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$')
    && {{ get $a "token-endpoint-port" }}.value() != "{{ $port }}")
  message: >-
    annotation {{ include "fiskil-token-refresher.injectionAnnotation" "token-endpoint-port" }} must be a port
    number from 1 to 65535, other than {{ $port }} (the sidecar's health and metrics port)
- name: proxy-port
  expression: >-
    !{{ get $a "proxy-port" }}.hasValue()
    || ({{ get $a "proxy-port" }}.value().matches('^([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$')
    && {{ get $a "proxy-port" }}.value() != "{{ $port }}"
    && {{ get $a "proxy-port" }}.value() != {{ get $a "token-endpoint-port" }}.orValue(""))
  message: >-
    annotation {{ include "fiskil-token-refresher.injectionAnnotation" "proxy-port" }} must be a port number from 1
    to 65535, other than {{ $port }} (the sidecar's health and metrics port) and the token-endpoint-port annotation
- name: proxy-upstream
  expression: >-
    !{{ get $a "proxy-upstream" }}.hasValue()
    || ({{ get $a "proxy-port" }}.hasValue()
    && {{ get $a "proxy-upstream" }}.value().matches('^https://[^\\s/]+/?$|^http://(127\\.0\\.0\\.1|localhost|\\[::1\\])(:[0-9]+)?/?$'))
  message: >-
    annotation {{ include "fiskil-token-refresher.injectionAnnotation" "proxy-upstream" }} needs the proxy-port
    annotation and must be an origin: https://host[:port], or http:// to 127.0.0.1, localhost or [::1]
{{- end }}

{{/*
The objectSelector both policies match pods by.
*/}}
{{- define "fiskil-token-refresher.injectionObjectSelector" -}}
matchLabels:
  {{ include "fiskil-token-refresher.injectionAnnotation" "inject" }}: "true"
{{- end }}

{{/*
Checks of the injection values, and the cluster's support for the policy.
*/}}
{{- define "fiskil-token-refresher.validateInjection" -}}
{{- if not (.Capabilities.APIVersions.Has "admissionregistration.k8s.io/v1/MutatingAdmissionPolicy") }}
{{- fail "injection.enabled needs MutatingAdmissionPolicy (admissionregistration.k8s.io/v1, Kubernetes 1.36 or later), which this cluster does not serve: set injection.enabled=false and copy the sidecar by hand (example.enabled renders a workload to copy; see the README, \"Add the sidecar with one label\"). With helm template, pass --api-versions admissionregistration.k8s.io/v1/MutatingAdmissionPolicy --api-versions admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy" }}
{{- end }}
{{- if not (.Capabilities.APIVersions.Has "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy") }}
{{- fail "injection.enabled needs ValidatingAdmissionPolicy (admissionregistration.k8s.io/v1, Kubernetes 1.30 or later), which this cluster does not serve" }}
{{- end }}
{{- end }}
