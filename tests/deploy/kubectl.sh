#!/usr/bin/env bash
# Print the path of a kubectl binary: $FISKIL_KUBECTL if set, else a kubectl
# built once from the k8s.io/kubectl Go module (the same minor as the test
# control plane) and cached, else the kubectl on PATH when the build is not
# possible.
#
#   "$(tests/deploy/kubectl.sh)" --kubeconfig DIR/kubeconfig get ns
#
# FISKIL_KUBECTL_VERSION picks the k8s.io/kubectl module version (v0.<minor>.<patch>).
set -euo pipefail
# shellcheck source=tests/deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ -n ${FISKIL_KUBECTL:-} ]]; then
    [[ -x ${FISKIL_KUBECTL} ]] || deploy_die "FISKIL_KUBECTL=${FISKIL_KUBECTL} is not executable"
    printf '%s\n' "${FISKIL_KUBECTL}"
    exit 0
fi

bin="${TOOLS_CACHE}/kubectl-${KUBECTL_VERSION}/kubectl"

build_kubectl() {
    [[ -x ${bin} ]] && return 0
    command -v go >/dev/null 2>&1 || return 1
    local start=${SECONDS} dir="${TOOLS_CACHE}/build/kubectl-${KUBECTL_VERSION}"
    local minor_patch="${KUBECTL_VERSION#v0.}"
    deploy_log "building kubectl ${KUBECTL_VERSION} from the k8s.io/kubectl Go module"
    rm -rf "${dir}"
    mkdir -p "${dir}"
    # A throwaway main module: the kubectl command is k8s.io/kubectl/pkg/cmd;
    # the main package itself lives in k8s.io/kubernetes, which cannot be
    # required as a module without its replace directives.
    cat >"${dir}/main.go" <<'GO'
package main

import (
	"os"

	_ "k8s.io/client-go/plugin/pkg/client/auth"
	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	"k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/util"
)

func main() {
	logs.GlogSetter(cmd.GetLogVerbosity(os.Args)) // nolint:errcheck
	command := cmd.NewDefaultKubectlCommand()
	if err := cli.RunNoErrOutput(command); err != nil {
		util.CheckErr(err)
	}
}
GO
    (
        cd "${dir}"
        go mod init fiskil.local/tools/kubectl >/dev/null 2>&1
        go mod edit -require="k8s.io/kubectl@${KUBECTL_VERSION}" \
            -require="k8s.io/component-base@${KUBECTL_VERSION}" \
            -require="k8s.io/client-go@${KUBECTL_VERSION}"
        nice -n "${FISKIL_BUILD_NICE:-19}" go mod tidy
        local pkg=k8s.io/client-go/pkg/version ldflags="-s -w"
        ldflags+=" -X ${pkg}.gitVersion=v1.${minor_patch} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${minor_patch%%.*}"
        ldflags+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=1970-01-01T00:00:00Z"
        pkg=k8s.io/component-base/version
        ldflags+=" -X ${pkg}.gitVersion=v1.${minor_patch} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${minor_patch%%.*}"
        CGO_ENABLED=0 nice -n "${FISKIL_BUILD_NICE:-19}" \
            go build -trimpath -ldflags "${ldflags}" -o "${bin}.tmp" .
    ) >&2 || return 1
    "${bin}.tmp" version --client >&2 || return 1
    mv -f "${bin}.tmp" "${bin}"
    deploy_log "kubectl ${KUBECTL_VERSION} built in $((SECONDS - start))s"
}

mkdir -p "${bin%/*}"
if with_tool_lock kubectl build_kubectl && [[ -x ${bin} ]]; then
    printf '%s\n' "${bin}"
elif command -v kubectl >/dev/null 2>&1 && kubectl version --client >/dev/null 2>&1; then
    deploy_log "could not build kubectl ${KUBECTL_VERSION}; using $(command -v kubectl)"
    command -v kubectl
else
    deploy_die "no kubectl: the build from k8s.io/kubectl ${KUBECTL_VERSION} failed and none is on PATH"
fi
