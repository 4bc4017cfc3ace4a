# Dropline's container image (used by compose/compose.yaml). Build context: the repository root.
#
#   docker build -t dropline:local .
#   docker run --rm dropline:local --help
#
# Stage 1 builds the release binary with the locked dependencies on the official Rust image;
# stage 2 is Debian slim (same glibc as the builder) with CA certificates, the binary and a
# non-root user, nothing else. Configuration comes from the environment (DROPLINE_*) and the
# keys from files (compose mounts them as secrets under /run/secrets/).
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p dropline \
    && install -m 0755 target/release/dropline /usr/local/bin/dropline

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 dropline \
    && useradd --system --uid 10001 --gid dropline --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin dropline
COPY --from=builder /usr/local/bin/dropline /usr/local/bin/dropline
# Listen on every interface inside the container (the defaults are loopback); JSON logs.
ENV DROPLINE_WAITROOM__LISTEN=0.0.0.0:8080 \
    DROPLINE_API__LISTEN=0.0.0.0:8081 \
    DROPLINE_WORKERS__METRICS_LISTEN=0.0.0.0:9100 \
    DROPLINE_LOG_FORMAT=json
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080 8081 9100
ENTRYPOINT ["/usr/local/bin/dropline"]
CMD ["--help"]
