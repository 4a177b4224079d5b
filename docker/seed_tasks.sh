#!/bin/sh
# One-shot job (compose service `seed`): upload the current version of every task in a file store
# folder (<root>/<task>/CURRENT + <version>.safetensors) to a server, e.g. to fill an empty Redis store
# with the demo tasks shipped in the image. Same bytes give the same version, so re-running is harmless.
#   usage: seed_tasks.sh [ROOT]   (server from $SPEECHPROMPT_URL, token from $SPEECHPROMPT_ADMIN_TOKEN)
set -eu
root="${1:-/prompts_store}"
if [ -z "${SPEECHPROMPT_ADMIN_TOKEN:-}" ]; then
    echo "seed: SPEECHPROMPT_ADMIN_TOKEN is not set; nothing uploaded" >&2
    exit 0
fi
# wait (bounded) until the server answers ready: replicas load the backbone first
waited=0
until python -m clients.cli health > /dev/null 2>&1; do
    if [ "$waited" -ge "${SEED_WAIT_S:-600}" ]; then
        echo "seed: server at ${SPEECHPROMPT_URL:-http://127.0.0.1:8000} not ready after ${waited} s" >&2
        exit 1
    fi
    sleep 3
    waited=$((waited + 3))
done
for dir in "$root"/*/; do
    [ -d "$dir" ] || continue
    task=$(basename "$dir")
    file=""
    if [ -f "$dir/CURRENT" ]; then
        file="$dir$(tr -d ' \n' < "$dir/CURRENT").safetensors"
    fi
    if [ ! -f "$file" ]; then
        # shellcheck disable=SC2012  # newest file by mtime; names are <hex>.safetensors
        file=$(ls -t "$dir"*.safetensors 2>/dev/null | head -n 1)
    fi
    [ -n "$file" ] || continue
    python -m clients.cli upload "$task" "$file"
done
