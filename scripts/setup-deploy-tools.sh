#!/usr/bin/env bash
# Installs the tools the deployment tests (tests/deploy) need beyond the Python dev dependencies:
# Helm, built from source with Go through the Go module proxy into
#   ${KEB_CACHE_DIR:-~/.cache/kafka-eventbridge-bridge}/bin/helm
# (kubernetes-validate and hadolint come from PyPI with the dev extras of pyproject.toml).
# Idempotent: returns at once when the pinned Helm is there. Non-interactive (CI=true, no stdin).
# A cold build takes about 3 minutes on 2 cores; the Go build cache makes rebuilds quicker.
#
#   scripts/setup-deploy-tools.sh                 install Helm if missing
#   scripts/setup-deploy-tools.sh --update-lock   also regenerate requirements.lock (the image's
#                                                 pinned runtime dependencies) from pyproject.toml
set -euo pipefail
cd "$(dirname "$0")/.."

HELM_VERSION="v3.22.0"      # its go.mod needs Go >= 1.26 (older Go >= 1.21 fetches that toolchain)
HELM_K8S_MINOR="37"         # the Kubernetes minor of its client-go (v0.37): Helm's default kube version
CACHE="${KEB_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kafka-eventbridge-bridge}"
BIN="$CACHE/bin"
HELM="$BIN/helm"
STAMP="$BIN/.helm-$HELM_VERSION"

update_lock() {
  local py="${PYTHON:-python3}" tmp
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' RETURN
  if [ "$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" != "3.11" ]; then
    echo "error: the image runs Python 3.11: set PYTHON to a python3.11 to regenerate the lock" >&2
    return 1
  fi
  echo "==> regenerating requirements.lock in a clean virtualenv ($("$py" --version))"
  "$py" -m venv "$tmp/venv"
  # From a copy of what the image builds from, so no build/ directory lands in the work tree.
  mkdir "$tmp/src"
  cp -r pyproject.toml README.md bridge "$tmp/src/"
  "$tmp/venv/bin/python" -m pip install -q --disable-pip-version-check "$tmp/src"
  {
    sed -n '/^#/p' requirements.lock 2>/dev/null || true
    "$tmp/venv/bin/python" -m pip freeze --exclude kafka-eventbridge-bridge
  } >"$tmp/lock"
  mv "$tmp/lock" requirements.lock
  echo "==> requirements.lock: $(grep -vc '^#' requirements.lock) pinned packages"
}

if [ "${1:-}" = "--update-lock" ]; then
  update_lock
elif [ -n "${1:-}" ]; then
  echo "usage: $0 [--update-lock]" >&2
  exit 2
fi

if [ -x "$HELM" ] && [ -f "$STAMP" ]; then
  exit 0  # already installed: the fast path
fi

if ! command -v go >/dev/null 2>&1; then
  if [ -x /usr/local/go/bin/go ]; then
    PATH="/usr/local/go/bin:$PATH"
  else
    echo "error: Go (>= 1.21) is needed to build Helm $HELM_VERSION for the deploy tests;" \
      "install it (https://go.dev/doc/install) or put a Helm 3 binary at $HELM" >&2
    exit 1
  fi
fi

echo "==> building Helm $HELM_VERSION with $(go version | cut -d' ' -f3) into $BIN (about 3 minutes, once)"
mkdir -p "$BIN"
tmpbin="$(mktemp -d "$BIN/.build.XXXXXX")"
trap 'rm -rf "$tmpbin"' EXIT
ldflags="-s -w"
ldflags+=" -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
ldflags+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1"
ldflags+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$HELM_K8S_MINOR"
ldflags+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1"
ldflags+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$HELM_K8S_MINOR"
GOBIN="$tmpbin" CGO_ENABLED=0 GOTOOLCHAIN="${GOTOOLCHAIN:-auto}" GOFLAGS="-trimpath" \
  go install -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
"$tmpbin/helm" version --short >/dev/null
mv -f "$tmpbin/helm" "$HELM"
rm -f "$BIN"/.helm-*
touch "$STAMP"
echo "==> $("$HELM" version --short) at $HELM"
