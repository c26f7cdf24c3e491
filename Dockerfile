# syntax=docker/dockerfile:1
#
# One image with every fleet binary: fleet-ingest, fleet-detector, fleet-notifier,
# fleet-archiver, fleet-api, fleet-canary (the pipeline's dead man's switch), fleetctl
# (operators' CLI, the registry import Job) and fleet-gateway (for lab and soak
# gateways; home gateways are not run from here).
# The Helm chart (helm/fleet) picks the binary per service with the container command;
# the image itself starts nothing useful by default.
#
#   docker build -t registry.example.org/fleet/fleet:0.1.0 .
#
# Configuration comes only from FLEET_* environment variables and flags at run time:
# nothing secret is copied in (.dockerignore admits the sources and nothing else).
# BuildKit is required (the cache mounts below).

# Builder and runtime share the Debian release, so the binaries find the glibc they
# were linked against.
ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder

# rdkafka-sys builds librdkafka from source with its own configure script and make
# (no cmake; no TLS, SASL or zstd: the workspace asks only for rdkafka's defaults, which
# link zlib). protoc comes vendored with protoc-bin-vendored. So: a C toolchain, make,
# perl and zlib's headers.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential perl pkg-config zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# Every workspace member's manifest must be present, loadtest's included, although only
# the service crates are built.
COPY Cargo.toml Cargo.lock ./
COPY proto proto
COPY services services
COPY loadtest loadtest

# The release profile keeps line tables (debug = "line-tables-only") for backtraces;
# they are stripped here to keep the image small (11-13 MB a binary instead of 55-75 MB
# on this workspace). Symbols stay, so a panic's backtrace still names the functions.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
        -p fleet-ingest -p fleet-detector -p fleet-notifier -p fleet-archiver \
        -p fleet-api -p fleet-canary -p fleetctl -p fleet-gateway \
 && mkdir -p /out \
 && for bin in fleet-ingest fleet-detector fleet-notifier fleet-archiver fleet-api fleet-canary fleetctl fleet-gateway; do \
        objcopy --strip-debug "target/release/$bin" "/out/$bin"; \
    done

FROM debian:${DEBIAN_RELEASE}-slim AS runtime

# Nothing to install: the binaries need libc, libm, libgcc_s and libz (ldd), which the
# slim image has. Clinic endpoints' TLS roots are compiled in (webpki-roots), so no ca-certificates.
# A fixed numeric user, so Kubernetes can check runAsNonRoot without reading /etc/passwd.
RUN groupadd --system --gid 10001 fleet \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin fleet

COPY --from=builder /out/ /usr/local/bin/

USER 10001:10001
WORKDIR /tmp

LABEL org.opencontainers.image.title="fleet" \
      org.opencontainers.image.description="Remote monitoring of implanted intrathecal drug pumps: the fleet services and fleetctl" \
      org.opencontainers.image.licenses="Apache-2.0"

# The chart (or `docker run IMAGE fleet-ingest ...`) names the binary to run.
CMD ["fleetctl", "--help"]
