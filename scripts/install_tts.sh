#!/usr/bin/env bash
# Installs the TTS engines, voices and word lists the default backbone corpus is synthesized from
# (speechprompt/training/voices.py names them). Debian bookworm; needs root.
# MBROLA voices live in Debian's contrib / non-free components: this script enables them.
set -euo pipefail
SRC=/etc/apt/sources.list.d/debian-contrib-nonfree.sources
CODENAME=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
if ! grep -rqs "contrib" /etc/apt/sources.list /etc/apt/sources.list.d/ ; then
  cat > "$SRC" <<SRCEOF
Types: deb
URIs: http://deb.debian.org/debian
Suites: ${CODENAME} ${CODENAME}-updates
Components: contrib non-free
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRCEOF
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  espeak-ng sox \
  festival festvox-kallpc16k festvox-rablpc16k festvox-kdlpc16k festvox-us-slt-hts festvox-ellpc11k festvox-italp16k festvox-itapc16k \
  flite \
  mbrola mbrola-us1 mbrola-us2 mbrola-us3 mbrola-en1 mbrola-de1 mbrola-de2 mbrola-fr1 mbrola-fr4 \
  mbrola-es1 mbrola-es3 mbrola-it3 mbrola-it4 mbrola-nl2 mbrola-nl3 mbrola-pl1 mbrola-pt1 mbrola-sw1 mbrola-sw2 mbrola-br4 mbrola-mx2 \
  wamerican wbritish wngerman wfrench wspanish witalian wdutch wportuguese wpolish wswedish wdanish wnorwegian wcatalan
