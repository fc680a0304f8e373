#!/usr/bin/env bash
# Validates every Kubernetes manifest in deploy/kubernetes (or the files given) against the
# API schema of one fixed Kubernetes version, in strict mode: an unknown or misspelt field
# fails as surely as a missing one. kubernetes-validate bundles its schemas, so this needs
# PyPI once (to install it into target/) and no cluster, network or Docker after that.
set -euo pipefail
cd "$(dirname "$0")/.."

# The release whose schemas the manifests are checked against: one widely run, so that
# nothing newer than it slips in. The tool bundles the schemas of 1.25 to 1.37.
kubernetes_version=1.30.0
# Pinned so that the same manifests give the same verdict on every machine.
validator_version=1.37.0
venv=target/kubernetes-validate
validator=$venv/bin/kubernetes-validate

if ! "$validator" --version 2>/dev/null | grep -qx "$validator_version"; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "kubernetes-validate==$validator_version"
fi

if [ $# -gt 0 ]; then
  files=("$@")
else
  files=(deploy/kubernetes/*.yaml)
fi
# --quiet prints only errors and warnings. An error exits non-zero; a warning does not,
# but the one it gives, a kind it has no schema for, is a misspelt kind here: both fail.
status=0
findings=$("$validator" --strict --quiet --kubernetes-version "$kubernetes_version" "${files[@]}" 2>&1) || status=$?
if [ "$status" -ne 0 ] || [ -n "$findings" ]; then
  printf '%s\n' "$findings" >&2
  echo "kubernetes manifests: invalid for Kubernetes $kubernetes_version (strict)" >&2
  exit 1
fi
echo "kubernetes manifests: ${#files[@]} files valid for Kubernetes $kubernetes_version (strict)"
