#!/bin/sh
# Container entrypoint: optional first-start import of the official GSLM backbone, then exec the command.
#
# With SPEECHPROMPT_GSLM=1 and no backbone.json in $SPEECHPROMPT_GSLM_BUNDLE_DIR yet, the official files
# (HuBERT base, k-means codebook, unit LM for $SPEECHPROMPT_GSLM_UNITS units; ~1.3 GB, needs internet)
# are downloaded into $SPEECHPROMPT_GSLM_SRC_DIR and converted once into a bundle (safetensors; no
# pickle at serve time):
#     speechprompt download-gslm --dest SRC --units N          (checksummed, resumable)
#     speechprompt import-gslm --hubert .. --km .. --lm .. --dict .. --out BUNDLE
# Point the server at it with SPEECHPROMPT_BUNDLE_DIR=$SPEECHPROMPT_GSLM_BUNDLE_DIR. The /models volume
# keeps the bundle, so later starts skip this step. `speechprompt-entrypoint gslm` runs only the import.
set -eu

GSLM_BUNDLE="${SPEECHPROMPT_GSLM_BUNDLE_DIR:-/models/gslm-hubert100}"
GSLM_SRC="${SPEECHPROMPT_GSLM_SRC_DIR:-/models/.gslm-download}"

import_gslm() {
    if [ -f "$GSLM_BUNDLE/backbone.json" ]; then
        echo "speechprompt-entrypoint: GSLM bundle already at $GSLM_BUNDLE" >&2
        return 0
    fi
    units="${SPEECHPROMPT_GSLM_UNITS:-100}"
    echo "speechprompt-entrypoint: downloading official GSLM files into $GSLM_SRC" >&2
    speechprompt download-gslm --dest "$GSLM_SRC" --units "$units"
    echo "speechprompt-entrypoint: converting them into the bundle $GSLM_BUNDLE" >&2
    lm=$(find "$GSLM_SRC/hubert${units}_lm" -name checkpoint_best.pt | head -n 1)
    dict=$(find "$GSLM_SRC/hubert${units}_lm" -name dict.txt | head -n 1)
    speechprompt import-gslm --hubert "$GSLM_SRC/hubert_base_ls960.pt" --km "$GSLM_SRC/km.bin" \
        --lm "$lm" --dict "$dict" --out "$GSLM_BUNDLE" --name "gslm-hubert${units}"
    if [ "${SPEECHPROMPT_GSLM_KEEP_SRC:-0}" != "1" ]; then
        rm -rf "$GSLM_SRC"
    fi
}

if [ "${1:-}" = "gslm" ]; then
    import_gslm
    exit 0
fi
if [ "${SPEECHPROMPT_GSLM:-0}" = "1" ]; then
    import_gslm
fi
exec "$@"
