# syntax=docker/dockerfile:1
#
# fiskil-token-refresher container image: a static musl binary (rustls with
# ring, no OpenSSL) on distroless/static, running as the numeric non-root user
# 65532. No shell, no package manager.
#
#   docker build --build-arg FISKIL_GIT_COMMIT="$(git rev-parse HEAD)" \
#       -t fiskil-token-refresher .
#
# The build context has no .git: FISKIL_GIT_COMMIT is the commit that
# `--version` names ("unknown" without it). `cargo auditable` embeds the
# dependency list in the binary (a .dep-v0 section that cargo-audit and
# syft read).
#
# tests/deploy/static-binary.sh builds the same binary without Docker.

ARG RUST_VERSION=1.95
ARG CARGO_AUDITABLE_VERSION=0.7.7
ARG RUNTIME_IMAGE=gcr.io/distroless/static-debian12:nonroot

FROM rust:${RUST_VERSION}-slim-bookworm AS builder
ARG CARGO_AUDITABLE_VERSION

# musl-gcc compiles ring's C and assembly for the musl target.
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools=1.2.3-1 \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add x86_64-unknown-linux-musl \
    && cargo install --locked "cargo-auditable@${CARGO_AUDITABLE_VERSION}"

WORKDIR /src
# The build context is only what .dockerignore lets through: the manifests,
# the lock file and the sources.
COPY . .

# The registry and target caches survive between builds (BuildKit); the binary
# is copied out of the cache mount in the same step.
ARG FISKIL_GIT_COMMIT=unknown
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo auditable build --release --locked --target x86_64-unknown-linux-musl -p fiskil-token-refresher \
    && install -m 0755 target/x86_64-unknown-linux-musl/release/fiskil-token-refresher /fiskil-token-refresher

FROM ${RUNTIME_IMAGE}

LABEL org.opencontainers.image.title="fiskil-token-refresher" \
      org.opencontainers.image.description="Keeps a valid Fiskil API bearer token in a file or a Kubernetes Secret" \
      org.opencontainers.image.licenses="Apache-2.0"

# distroless/static carries a CA bundle in /etc/ssl/certs; the binary also
# embeds the Mozilla roots, so the token endpoint verifies either way.
COPY --from=builder /fiskil-token-refresher /fiskil-token-refresher

USER 65532:65532
EXPOSE 9847
ENTRYPOINT ["/fiskil-token-refresher"]
