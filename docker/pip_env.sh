# Sourced by the Dockerfiles' RUN steps. pip reads PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_FIND_LINKS and
# PIP_TRUSTED_HOST from the environment by itself (they are build args); an empty one (a build arg left
# unset) would be taken literally, e.g. as an empty index URL, so drop those.
for v in PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_FIND_LINKS PIP_TRUSTED_HOST; do
    eval "val=\${$v:-}"
    if [ -z "$val" ]; then unset "$v"; fi
done
unset v val
