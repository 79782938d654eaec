# syntax=docker/dockerfile:1
# event-aggregator: build with the official Rust image, run on slim Debian as a
# non-root user (uid 10001). Both binaries are in the image: `aggregator` (the
# default command) and `publisher` (the compose demo's load generator).

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# Dependency layer: build every dependency against stub targets, so that editing
# src/ does not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src/bin/publisher benches/stages tests/it examples \
    && echo 'fn main() {}' > src/bin/aggregator.rs \
    && echo 'fn main() {}' > src/bin/publisher/main.rs \
    && echo 'fn main() {}' > benches/stages/main.rs \
    && echo 'fn main() {}' > tests/it/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked --bins \
    && rm -rf src benches tests
COPY src ./src
COPY benches ./benches
COPY tests ./tests
COPY examples ./examples
# Stubs are older than the real sources, but touch them to be sure cargo rebuilds.
RUN touch src/lib.rs src/bin/*.rs src/bin/publisher/*.rs && cargo build --release --locked --bins

FROM debian:bookworm-slim
RUN groupadd --system --gid 10001 aggregator \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin aggregator \
    && mkdir -p /app/data \
    && chown aggregator:aggregator /app/data
COPY --from=build /src/target/release/aggregator /src/target/release/publisher /usr/local/bin/
WORKDIR /app
ENV API_HOST=0.0.0.0 \
    API_PORT=8000 \
    DB_PATH=/app/data/aggregator.redb \
    RUST_LOG=info
VOLUME ["/app/data"]
EXPOSE 8000
USER 10001:10001
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=5 \
    CMD ["aggregator", "healthcheck"]
ENTRYPOINT ["aggregator"]
