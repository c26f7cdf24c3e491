#!/usr/bin/env bash
# Checks the deployment artefacts against the code and against each other: the Helm
# chart (values against its schema, templates rendered by Helm's own engine, every
# object against Kubernetes' schemas), the alert rules, the Grafana dashboards, the
# Dockerfile, the Strimzi example and docs/operations.md. What is and is not checked:
# docs/operations.md, "What CI checks". The checks themselves: scripts/check_deploy.py.
#
#   scripts/check-deploy.sh              every section
#   scripts/check-deploy.sh chart        one or more sections (code alerts dashboards
#                                        chart image strimzi prometheus docs)
#
# Needs python3 (3.10 or later) and pip; the Python packages go into a virtual
# environment of their own under ~/.cache/fleet (created on first use, about 400 MB,
# a minute to download; afterwards the run takes seconds). Nothing here needs Docker,
# helm, a cluster or the network once the environment exists.
#
# Exits non-zero on any problem, naming the file and the object.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'check-deploy: %s\n' "$*" >&2; }

VENV=${FLEET_DEPLOY_CHECK_VENV:-$HOME/.cache/fleet/venv-deploy-check}
# Pinned: helm-python-sdk is called below its public API (the native render call with
# api_versions and kube_version, i.e. `helm template --api-versions --kube-version`), and
# kubernetes-validate's newest schemas move with its version.
REQUIREMENTS=(
  "PyYAML==6.0.3"
  "jsonschema==4.26.0"
  "promql-parser==0.12.0"
  "helm-python-sdk==0.2.2"
  "kubernetes-validate==1.37.0"
  "dockerfile==3.4.0"
)
stamp="$VENV/.fleet-requirements"
wanted=$(printf '%s\n' "${REQUIREMENTS[@]}")

if [[ ! -x $VENV/bin/python ]] || [[ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]]; then
  python=$(command -v python3) || { say "python3 is needed"; exit 1; }
  "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
    { say "python3 3.10 or later is needed (found $("$python" --version 2>&1))"; exit 1; }
  say "preparing the Python environment in $VENV (once)"
  [[ -x $VENV/bin/python ]] || "$python" -m venv "$VENV"
  if ! "$VENV/bin/pip" install --quiet --disable-pip-version-check "${REQUIREMENTS[@]}" >&2; then
    say "pip could not install ${REQUIREMENTS[*]} into $VENV"
    exit 1
  fi
  printf '%s\n' "$wanted" >"$stamp"
fi

exec "$VENV/bin/python" scripts/check_deploy.py "$@"
