#!/usr/bin/env bash
# Builds prenv's container image from the working tree and pushes it, without Docker.
#
#   scripts/image.sh REGISTRY [oci-image.py options...]
#
# REGISTRY is HOST[:PORT] of a Registry API v2 reachable over plain HTTP, e.g. 127.0.0.1:5000
# (Debian's docker-registry on loopback). Extra arguments go to scripts/oci-image.py (e.g.
# --oci-layout DIR, or --no-push to only build). The last line on stdout is the reference
# REGISTRY/prenv:VERSION-HASH: VERSION is Cargo.toml's, HASH the first 12 hex digits of the
# image's manifest digest (a content hash of the binary and everything else in the image: a
# rebuild that changes anything gets a new tag, an identical rebuild the same one). The line
# before it is the digest reference REGISTRY/prenv@sha256:.... Logs go to stderr.
#
# The image is what the Dockerfile builds (that stays for users with Docker), single layer:
#   /prenv                               static binary (glibc, +crt-static; no musl target here)
#   /etc/ssl/certs/ca-certificates.crt   from Debian's ca-certificates (rustls-native-certs)
#   /etc/passwd, /etc/group              root and nonroot (65532)
#   /etc/nsswitch.conf, /etc/hosts       "hosts: files dns" for static glibc's resolver
#   /tmp                                 1777, the chart mounts an emptyDir there
# user 65532:65532, entrypoint ["/prenv"], cmd ["serve"], ports 8080 and 9090.
#
# The binary is built in ~/.cache/prenv/image-target (PRENV_IMAGE_TARGET_DIR overrides): the
# normal build cache stays valid and other checkouts reuse it. See scripts/README-images.md.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
log() { printf 'image: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $# -ge 1 && $1 != -* ]] || die "usage: $0 REGISTRY [oci-image.py options...] (REGISTRY like 127.0.0.1:5000)"
registry=${1%/}
shift

command -v cargo >/dev/null || die "cargo not found"
command -v python3 >/dev/null || die "python3 not found"
command -v readelf >/dev/null || die "readelf not found (Debian package binutils)"

sudo=()
[[ $(id -u) -eq 0 ]] || sudo=(sudo)
certs=/etc/ssl/certs/ca-certificates.crt
if [[ ! -s $certs ]]; then
    log "installing Debian's ca-certificates"
    "${sudo[@]}" apt-get install -y --no-install-recommends ca-certificates >&2 \
        || { "${sudo[@]}" apt-get update >&2 && "${sudo[@]}" apt-get install -y --no-install-recommends ca-certificates >&2; } \
        || die "could not install ca-certificates"
    [[ -s $certs ]] || die "$certs missing after installing ca-certificates"
fi

host=$(rustc -vV | sed -n 's/^host: //p')
case $host in
    x86_64-unknown-linux-gnu) arch=amd64 ;;
    aarch64-unknown-linux-gnu) arch=arm64 ;;
    *) die "unsupported build host $host (need x86_64 or aarch64 Linux with glibc)" ;;
esac
version=$(cd "$root" && cargo metadata --no-deps --format-version 1 --locked |
    python3 -c 'import json, sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "prenv"))') \
    || die "could not read prenv's version from Cargo.toml"

# glibc, statically linked: the musl target is not installed here. --target keeps the
# +crt-static RUSTFLAGS away from build scripts and proc macros (they must stay dynamic).
target_dir=${PRENV_IMAGE_TARGET_DIR:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/prenv/image-target}
log "building prenv $version for $host (static, in $target_dir)"
(
    cd "$root"
    CARGO_TARGET_DIR=$target_dir \
        CARGO_PROFILE_RELEASE_STRIP=symbols \
        RUSTFLAGS="-C target-feature=+crt-static" \
        cargo build --release --locked --target "$host" --bin prenv
) >&2 || die "cargo build failed"
bin=$target_dir/$host/release/prenv
[[ -x $bin ]] || die "$bin not built"

# Static: no program interpreter and no shared libraries, or it would not start on an image
# without a libc.
if readelf -l "$bin" | grep 'program interpreter' >/dev/null; then
    die "$bin has a program interpreter: it is dynamically linked"
fi
if readelf -d "$bin" | grep '(NEEDED)' >/dev/null; then
    die "$bin needs shared libraries: $(readelf -d "$bin" | grep '(NEEDED)' | tr -s ' ' | tr '\n' ' ')"
fi
reported=$("$bin" --version) || die "$bin --version failed"
log "$reported, $(stat -c %s "$bin") bytes, statically linked"

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cat >"$stage/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
cat >"$stage/group" <<'EOF'
root:x:0:
nonroot:x:65532:
EOF
# Static glibc resolves names with the files and dns NSS services built into libc.a; without
# this file it would use its default order (dns first). Kubernetes mounts its own /etc/hosts
# and /etc/resolv.conf over the image's.
cat >"$stage/nsswitch.conf" <<'EOF'
passwd: files
group: files
hosts: files dns
EOF
cat >"$stage/hosts" <<'EOF'
127.0.0.1	localhost
::1	localhost ip6-localhost ip6-loopback
EOF

python3 "$root/scripts/oci-image.py" "$registry/prenv:$version-{digest}" \
    --file "$bin:/prenv:0755" \
    --file "$certs:/etc/ssl/certs/ca-certificates.crt:0644" \
    --file "$stage/passwd:/etc/passwd:0644" \
    --file "$stage/group:/etc/group:0644" \
    --file "$stage/nsswitch.conf:/etc/nsswitch.conf:0644" \
    --file "$stage/hosts:/etc/hosts:0644" \
    --dir /tmp:1777 \
    --entrypoint '["/prenv"]' \
    --cmd '["serve"]' \
    --user 65532:65532 \
    --expose 8080 \
    --expose 9090 \
    --arch "$arch" \
    --label org.opencontainers.image.title=prenv \
    --label "org.opencontainers.image.description=A preview environment for every GitHub pull request" \
    --label org.opencontainers.image.source=https://github.com/prenv/prenv \
    --label org.opencontainers.image.licenses=Apache-2.0 \
    --label "org.opencontainers.image.version=$version" \
    "$@"
