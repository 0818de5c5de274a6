# syntax=docker/dockerfile:1
#
# prenv's container image: one static (musl) binary on distroless, running as non-root
# (uid/gid 65532), no shell, no package manager. rustls with ring: no OpenSSL needed; the CA
# certificates for GitHub come with the distroless base.
#
# Build from the repository root (BuildKit, the default builder since Docker 23):
#
#   docker build -t ghcr.io/prenv/prenv:0.1.0 .     # the tag: Cargo.toml's version
#
# or for a registry:
#
#   docker buildx build --platform linux/amd64 -t ghcr.io/prenv/prenv:0.1.0 --push .
#
# The Helm chart's image tag defaults to the chart's appVersion, which is Cargo.toml's version.
# Run it: docker run --rm ghcr.io/prenv/prenv:0.1.0 --help

ARG RUST_IMAGE=rust:1-bookworm
ARG BASE_IMAGE=gcr.io/distroless/static-debian12:nonroot

FROM ${RUST_IMAGE} AS build
# Set by BuildKit to the platform being built (amd64 when unset).
ARG TARGETARCH
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# musl-gcc compiles ring's C and assembly for the musl target. (Debian's current musl-tools:
# pinning a Debian version breaks as soon as the mirror moves on.)
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
RUN case "${TARGETARCH:-amd64}" in \
      amd64) echo x86_64-unknown-linux-musl ;; \
      arm64) echo aarch64-unknown-linux-musl ;; \
      *) echo "unsupported architecture ${TARGETARCH}" >&2; exit 1 ;; \
    esac > /rust-target \
 && rustup target add "$(cat /rust-target)"
WORKDIR /src
# The whole workspace (tests/standin is a member, so Cargo.lock covers it); .dockerignore keeps
# target/ and .git out.
COPY . .
ENV CARGO_PROFILE_RELEASE_STRIP=symbols \
    CC_x86_64_unknown_linux_musl=musl-gcc \
    CC_aarch64_unknown_linux_musl=musl-gcc
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    target="$(cat /rust-target)" \
 && cargo build --release --locked --target "$target" --bin prenv \
 && cp "target/$target/release/prenv" /prenv
# Fail the build if the binary is not static (no program interpreter: it would not run on
# distroless/static otherwise).
RUN if readelf -l /prenv | grep -q 'program interpreter'; then \
      echo "prenv is dynamically linked" >&2; exit 1; \
    fi \
 && /prenv --version

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="prenv" \
      org.opencontainers.image.description="A preview environment for every GitHub pull request" \
      org.opencontainers.image.source="https://github.com/prenv/prenv" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /prenv /prenv
USER 65532:65532
# 8080: POST /webhooks/github; 9090: /metrics, /healthz, /readyz.
EXPOSE 8080 9090
ENTRYPOINT ["/prenv"]
CMD ["serve"]
