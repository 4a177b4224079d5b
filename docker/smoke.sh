#!/usr/bin/env bash
# End-to-end smoke test of the Docker deployment on a machine with no registry access (NOT run in CI).
#
#   sudo docker/smoke.sh            # everything, then tear down
#   KEEP=1 docker/smoke.sh          # leave the stack and the engine running
#   sudo docker/smoke.sh tools      # only step 0
#
# Steps (each skipped when its result already exists):
#   0. install the host tools it needs when missing (dockerd from docker.io, debootstrap, docker-compose;
#      Debian packages, as root, as the Makefile does for its tools); not root: say what to install, exit 1;
#   1. start a private dockerd: --iptables=false --ip6tables=false --bridge=none, data root and socket under
#      $SMOKE_DIR (no default bridge: containers use host networking, see step 4);
#   2. make a local Debian bookworm base image (debootstrap + `docker import`) with python3.11, redis and
#      nginx, since no image can be pulled;
#   3. build docker/Dockerfile.cpu FROM it (BASE_IMAGE build arg) with `--network host`; pip in the build
#      uses a local index the host fills and serves on 127.0.0.1:$INDEX_PORT (PIP_INDEX_URL build arg;
#      set PIP_INDEX_URL yourself to use another), and local wheels (the host's CPU torch wheel, a
#      pre-built fairseq-fixed wheel) staged into docker/wheels/;
#   4. derive a compose file from docker-compose.yml (`docker-compose config`), changed only where host
#      networking needs it: network_mode host for every service, no networks/ports, distinct ports
#      (redis 16379, api1 18001, api2 18002, lb 18080), redis/nginx from the local base image, and an
#      nginx config whose upstream lists the two replica ports instead of the `api` DNS alias;
#      (while models/ has no default bundle, a tiny random one is made on the host and mounted on /models);
#   5. start the stack, run docker/smoke_check.py (real recording through the balancer; upload on one
#      replica, classify through the balancer and on the other replica; delete);
#   6. tear down (compose down -v, stop dockerd) unless KEEP=1.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SMOKE_DIR=${SMOKE_DIR:-/tmp/speechprompt-smoke}
BASE_TAG=${BASE_TAG:-sp-base:bookworm}
IMAGE=${IMAGE:-speechprompt:cpu}
PROJECT=${PROJECT:-spsmoke}
INDEX_PORT=${INDEX_PORT:-18099}
PY=${PY:-$ROOT/.venv/bin/python}
AUDIO=${AUDIO:-/usr/share/sounds/alsa/Front_Center.wav}
export SPEECHPROMPT_ADMIN_TOKEN=${SPEECHPROMPT_ADMIN_TOKEN:-smoke-token}
export DOCKER_HOST="unix://$SMOKE_DIR/docker.sock"
export DOCKER_BUILDKIT=0 COMPOSE_DOCKER_CLI_BUILD=0
# the engine is docker.io 20.10: prefer its own client when several are installed
DOCKER=${DOCKER:-$( [ -x /usr/bin/docker ] && echo /usr/bin/docker || command -v docker || true )}
COMPOSE=(docker-compose -p "$PROJECT" -f "$SMOKE_DIR/compose.smoke.yml")
mkdir -p "$SMOKE_DIR"
log() { printf '\n== %s (%s)\n' "$*" "$(date +%T)"; }

HOST_PKGS=(docker.io debootstrap docker-compose)
host_tools() {
    local missing=()
    command -v dockerd > /dev/null || missing+=(docker.io)
    command -v debootstrap > /dev/null || missing+=(debootstrap)
    command -v docker-compose > /dev/null || missing+=(docker-compose)
    [ ${#missing[@]} -eq 0 ] && return
    if [ "$(id -u)" != 0 ]; then
        echo "docker/smoke.sh needs ${missing[*]}: run it as root (it installs them) or: apt-get install ${HOST_PKGS[*]}" >&2
        exit 1
    fi
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
    hash -r
    [ -n "$DOCKER" ] || DOCKER=$( [ -x /usr/bin/docker ] && echo /usr/bin/docker || command -v docker || true )
}

start_engine() {
    if "$DOCKER" info > /dev/null 2>&1; then return; fi
    log "starting dockerd (data root $SMOKE_DIR/data)"
    dockerd --iptables=false --ip6tables=false --bridge=none \
        --data-root "$SMOKE_DIR/data" --exec-root "$SMOKE_DIR/exec" --pidfile "$SMOKE_DIR/dockerd.pid" \
        --host "$DOCKER_HOST" > "$SMOKE_DIR/dockerd.log" 2>&1 &
    for _ in $(seq 60); do "$DOCKER" info > /dev/null 2>&1 && return; sleep 1; done
    tail -n 20 "$SMOKE_DIR/dockerd.log" >&2
    echo "dockerd did not start" >&2
    exit 1
}

make_base() {
    if "$DOCKER" image inspect "$BASE_TAG" > /dev/null 2>&1; then return; fi
    local rootfs="$SMOKE_DIR/rootfs"
    if [ ! -x "$rootfs/usr/bin/python3.11" ]; then
        log "debootstrap bookworm into $rootfs"
        rm -rf "$rootfs"
        debootstrap --variant=minbase \
            --include=python3.11,python3.11-venv,python3-distutils,python3-lib2to3,python3-pip-whl,python3-setuptools-whl,passwd,ca-certificates,redis-server,redis-tools,nginx-light,wget \
            bookworm "$rootfs" http://deb.debian.org/debian > "$SMOKE_DIR/debootstrap.log" 2>&1
    fi
    log "importing $rootfs as $BASE_TAG"
    tar -C "$rootfs" --exclude=./proc --exclude=./sys --exclude=./dev -c . \
        | "$DOCKER" import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'CMD ["/bin/bash"]' - "$BASE_TAG"
}

stage_wheels() {
    # local wheels the build may use instead of downloading (never committed: docker/wheels/.gitignore)
    local w
    for w in /opt/wheels/torch-2.13.0+cpu-*.whl \
             "$(find /root/.cache/pip/wheels -name 'fairseq_fixed-0.12.3.1-*.whl' 2>/dev/null | head -n 1)"; do
        if [ -f "$w" ] && [ ! -f "$ROOT/docker/wheels/$(basename "$w")" ]; then
            cp "$w" "$ROOT/docker/wheels/" && echo "staged $(basename "$w")"
        fi
    done
}

local_index() {
    # The build's pip cannot verify this host's TLS interception (its CA is only in the host's bundle), so
    # the host downloads what the image needs (pip honours the host's pip.conf: /opt/wheels, local indexes)
    # and serves it as a plain PEP 503 index on 127.0.0.1:$INDEX_PORT, passed as the PIP_INDEX_URL build arg.
    local idx="$SMOKE_DIR/pypi" reqs
    reqs=$("$PY" -c "import tomllib; p = tomllib.load(open('$ROOT/pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['fairseq']))")
    # a cached index is reused only while pyproject.toml asks for the same packages
    [ "$reqs" = "$(cat "$idx/requirements.txt" 2> /dev/null)" ] || rm -f "$idx/.complete"
    if [ ! -f "$idx/.complete" ]; then
        log "downloading the image's Python packages into $idx (host pip)"
        mkdir -p "$idx/files"
        printf '%s\n' "$reqs" > "$idx/requirements.txt"
        # markers are evaluated for the host's Python; the image has Debian's 3.11.2, for which redis also
        # needs async-timeout (python_full_version < 3.11.3): such packages are named explicitly
        "$PY" -m pip download -q -d "$idx/files" -r "$idx/requirements.txt" torch==2.13.0 \
            pip==26.3 setuptools==84.2.1 wheel==0.48.0 cython numpy async-timeout ${SMOKE_EXTRA_PKGS:-} \
            2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true
        [ -n "$(ls "$idx/files"/torch-* 2> /dev/null)" ] || { echo "pip download failed" >&2; exit 1; }
        touch "$idx/.complete"
    fi
    "$PY" - "$idx" <<'PYEOF'
import html, pathlib, re, sys
root = pathlib.Path(sys.argv[1])
projects = {}
for f in sorted((root / "files").iterdir()):
    name = f.name.split("-")[0] if f.suffix == ".whl" else re.split(r"-\d", f.name)[0]
    projects.setdefault(re.sub(r"[-_.]+", "-", name).lower(), []).append(f.name)
for proj, files in projects.items():
    d = root / "simple" / proj
    d.mkdir(parents=True, exist_ok=True)
    links = "".join(f'<a href="../../files/{html.escape(n)}">{html.escape(n)}</a><br>' for n in files)
    (d / "index.html").write_text(f"<html><body>{links}</body></html>")
print(f"local index: {len(projects)} projects")
PYEOF
    (cd "$idx" && exec "$PY" -m http.server "$INDEX_PORT" --bind 127.0.0.1 > "$SMOKE_DIR/index.log" 2>&1) &
    echo $! > "$SMOKE_DIR/index.pid"
    sleep 1
}

build_image() {
    log "building $IMAGE from $BASE_TAG"
    "$DOCKER" build --network host -f "$ROOT/docker/Dockerfile.cpu" \
        --build-arg BASE_IMAGE="$BASE_TAG" --build-arg TORCH_INDEX_URL= \
        --build-arg PIP_INDEX_URL="${PIP_INDEX_URL:-http://127.0.0.1:$INDEX_PORT/simple/}" \
        ${PIP_EXTRA_INDEX_URL:+--build-arg PIP_EXTRA_INDEX_URL="$PIP_EXTRA_INDEX_URL"} \
        -t "$IMAGE" "$ROOT" 2>&1 | tee "$SMOKE_DIR/build.log" | grep -E '^(Step|Successfully|ERROR|error)' || true
    "$DOCKER" image inspect "$IMAGE" > /dev/null 2>&1 || { tail -n 30 "$SMOKE_DIR/build.log" >&2; exit 1; }
}

models_dir() {
    # the image carries the repository's models/; while that has no default bundle (not committed yet),
    # mount a tiny random bundle (speechprompt.backbone.make_random_bundle) over /models instead
    if [ -f "$ROOT/models/default/backbone.json" ]; then
        MODELS_MOUNT=""
        return
    fi
    log "models/default/backbone.json missing: using a tiny random bundle in $SMOKE_DIR/models"
    if [ ! -f "$SMOKE_DIR/models/default/backbone.json" ]; then
        "$PY" -c "from speechprompt.backbone import make_random_bundle; \
print(make_random_bundle('$SMOKE_DIR/models/default', seed=0, name='smoke-random-tiny'))"
    fi
    chmod -R a+rX "$SMOKE_DIR/models"
    MODELS_MOUNT="$SMOKE_DIR/models"
}

write_compose() {
    log "deriving $SMOKE_DIR/compose.smoke.yml from docker-compose.yml (host networking)"
    sed -e 's|^\( *\)set \$api_upstream api;|\1# smoke: static upstream on host ports|' \
        -e 's|proxy_pass http://\$api_upstream:8000;|proxy_pass http://speechprompt_smoke;|' \
        -e 's|listen 8080;|listen 127.0.0.1:18080;|' \
        -e 's|^\( *\)resolver .*|\1upstream speechprompt_smoke { server 127.0.0.1:18001 max_fails=0; server 127.0.0.1:18002 max_fails=0; }|' \
        -e '/resolver_timeout/d' \
        "$ROOT/docker/nginx.conf" > "$SMOKE_DIR/nginx.smoke.conf"
    (cd "$ROOT" && docker-compose -f docker-compose.yml config) > "$SMOKE_DIR/compose.resolved.yml"
    python3 - "$SMOKE_DIR" "$BASE_TAG" "$IMAGE" "$MODELS_MOUNT" <<'PYEOF'
import sys
import yaml

out_dir, base, image, models = sys.argv[1:5]
cfg = yaml.safe_load(open(f"{out_dir}/compose.resolved.yml"))
cfg.pop("networks", None)
ports = {"api1": 18001, "api2": 18002}
for name, svc in cfg["services"].items():
    svc.pop("networks", None)
    svc.pop("ports", None)
    svc.pop("build", None)
    svc["network_mode"] = "host"
    env = svc.setdefault("environment", {})
    if "SPEECHPROMPT_STORE" in env:
        env["SPEECHPROMPT_STORE"] = "redis://127.0.0.1:16379/0"
    if name in ports:
        svc["image"] = image
        svc["command"] = ["speechprompt", "serve", "--host", "127.0.0.1", "--port", str(ports[name])]
        env["SPEECHPROMPT_HEALTH_URL"] = f"http://127.0.0.1:{ports[name]}/readyz"
        if models:
            svc["volumes"] = [f"{models}:/models:ro"]
    elif name == "redis":
        svc["image"] = base
        svc["command"] = ["redis-server", "--bind", "127.0.0.1", "--port", "16379", "--dir", "/data",
                          "--appendonly", "yes", "--save", ""]
        svc["healthcheck"]["test"] = ["CMD", "redis-cli", "-p", "16379", "ping"]
    elif name == "lb":
        svc["image"] = base
        svc["command"] = ["nginx", "-c", "/etc/nginx/smoke.conf", "-g", "daemon off;"]
        svc["volumes"] = [f"{out_dir}/nginx.smoke.conf:/etc/nginx/smoke.conf:ro"]
        svc["healthcheck"]["test"] = ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:18080/lb-health"]
    elif name == "seed":
        svc["image"] = image
        env["SPEECHPROMPT_URL"] = "http://127.0.0.1:18080"
yaml.safe_dump(cfg, open(f"{out_dir}/compose.smoke.yml", "w"), sort_keys=False)
PYEOF
}

teardown() {
    if [ "${KEEP:-0}" = "1" ]; then
        echo "KEEP=1: stack left running (DOCKER_HOST=$DOCKER_HOST; ${COMPOSE[*]} down -v)"
        return
    fi
    log "tearing down"
    "${COMPOSE[@]}" logs --no-color > "$SMOKE_DIR/compose.log" 2>&1 || true
    "${COMPOSE[@]}" down -v --remove-orphans > /dev/null 2>&1 || true
    if [ -f "$SMOKE_DIR/index.pid" ]; then
        kill "$(cat "$SMOKE_DIR/index.pid")" 2> /dev/null || true
    fi
    if [ -f "$SMOKE_DIR/dockerd.pid" ]; then
        local pid
        pid=$(cat "$SMOKE_DIR/dockerd.pid")
        kill "$pid" 2> /dev/null || true
        for _ in $(seq 30); do kill -0 "$pid" 2> /dev/null || break; sleep 1; done
    fi
    # dockerd leaves its network namespace file mounted
    if mountpoint -q "$SMOKE_DIR/exec/netns/default" 2> /dev/null; then
        umount "$SMOKE_DIR/exec/netns/default" || true
    fi
}

host_tools
[ "${1:-}" = "tools" ] && exit 0
start_engine
trap teardown EXIT
make_base
stage_wheels
[ -n "${PIP_INDEX_URL:-}" ] || local_index
build_image
models_dir
write_compose
log "starting the stack"
"${COMPOSE[@]}" up -d --no-build
log "checks"
if ! "$PY" "$ROOT/docker/smoke_check.py" http://127.0.0.1:18080 http://127.0.0.1:18001 http://127.0.0.1:18002 "$AUDIO"; then
    "${COMPOSE[@]}" ps || true
    "${COMPOSE[@]}" logs --no-color --tail 40 || true
    exit 1
fi
# both replicas must have answered classify requests for the uploaded task (the balancer spreads them;
# replica 2 also got one direct request), as their access logs show
for svc in api1 api2; do
    n=$("${COMPOSE[@]}" logs --no-color "$svc" 2>&1 | grep -c 'POST /v1/tasks/smoke-task/classify' || true)
    echo "$svc answered $n classify requests for smoke-task"
    [ "$n" -ge 1 ] || { echo "FAIL: $svc got no request through the balancer" >&2; exit 1; }
done
"${COMPOSE[@]}" logs --no-color seed 2>&1 | tail -n 5
"${COMPOSE[@]}" ps
log "smoke: ok"
