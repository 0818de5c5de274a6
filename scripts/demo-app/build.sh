#!/usr/bin/env bash
# Builds and pushes the demo app image that preview environments deploy in tests and demos:
# Debian's busybox-static serving HTTP on :8080 as uid 65532.
#
#   scripts/demo-app/build.sh REGISTRY [oci-image.py options...]
#
# REGISTRY is HOST[:PORT] of a Registry API v2 reachable over plain HTTP (e.g. 127.0.0.1:5000).
# Extra arguments go to scripts/oci-image.py (e.g. --oci-layout DIR). The last line on stdout
# is the pushed reference REGISTRY/prenv-demo-app:TAG, where TAG is the first 12 hex digits of
# the manifest digest: same busybox and same files, same tag. Logs go to stderr.
#
# The app: GET / answers text/plain "sha=$GIT_SHA" and one "FLAG_x=value" line per FLAG_*
# environment variable (sorted); GET /healthz answers "ok". See README-images.md.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
log() { printf 'demo-app: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $# -ge 1 && $1 != -* ]] || die "usage: $0 REGISTRY [oci-image.py options...] (REGISTRY like 127.0.0.1:5000)"
registry=${1%/}
shift

busybox=/bin/busybox
if ! dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep 'ok installed' >/dev/null; then
    log "installing Debian's busybox-static"
    sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    "${sudo[@]}" apt-get install -y --no-install-recommends busybox-static >&2 \
        || { "${sudo[@]}" apt-get update >&2 && "${sudo[@]}" apt-get install -y --no-install-recommends busybox-static >&2; } \
        || die "could not install busybox-static"
fi
[[ -x $busybox ]] || die "$busybox missing after installing busybox-static"
if command -v readelf >/dev/null && readelf -l "$busybox" | grep 'program interpreter' >/dev/null; then
    die "$busybox is dynamically linked (is the busybox package installed instead of busybox-static?)"
fi

# Every applet as a symlink to /bin/busybox at its usual place (sh, env, httpd, ...): the
# scripts need a few, and kubectl exec gets a usable shell.
links=()
while IFS= read -r applet; do
    case $applet in
        '' | bin/busybox | linuxrc) ;;
        *) links+=(--symlink "/$applet:/bin/busybox") ;;
    esac
done < <("$busybox" --list-full | LC_ALL=C sort)
[[ ${#links[@]} -gt 0 ]] || die "$busybox --list-full listed no applets"

version=$("$busybox" 2>&1 || true)
log "building prenv-demo-app from $busybox (${version%%$'\n'*})"
exec python3 "$here/../oci-image.py" "$registry/prenv-demo-app:{digest}" \
    --file "$busybox:/bin/busybox:0755" \
    --file "$here/entrypoint.sh:/usr/local/bin/demo-app:0755" \
    --file "$here/www/cgi-bin/index.cgi:/www/cgi-bin/index.cgi:0755" \
    --file "$here/www/healthz:/www/healthz:0644" \
    --file "$here/etc/passwd:/etc/passwd:0644" \
    --file "$here/etc/group:/etc/group:0644" \
    "${links[@]}" \
    --entrypoint '["/usr/local/bin/demo-app"]' \
    --user 65532:65532 \
    --workdir /www \
    --expose 8080 \
    --label org.opencontainers.image.title=prenv-demo-app \
    --label "org.opencontainers.image.description=Demo app for prenv previews: GET / shows GIT_SHA and FLAG_* variables, GET /healthz answers ok" \
    --label org.opencontainers.image.source=https://github.com/prenv/prenv \
    "$@"
