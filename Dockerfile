# Build the daemon, then run it on a slim Debian. The broker is a separate container
# (docker-compose.yml), so the embedded nats-server is off here.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY config ./config
COPY bench ./bench
RUN cargo build --release --locked -p ticket-ledger

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 ledger && mkdir -p /data && chown ledger /data
COPY --from=build /src/target/release/ticket-ledger /usr/local/bin/ticket-ledger
USER ledger
ENV TICKET_LEDGER_HTTP__LISTEN=0.0.0.0:8080 \
    TICKET_LEDGER_STORE__PATH=/data/ledger \
    TICKET_LEDGER_NATS__URL=nats://nats:4222 \
    TICKET_LEDGER_NATS__EMBEDDED=never
VOLUME /data
EXPOSE 8080
ENTRYPOINT ["ticket-ledger"]
CMD ["serve"]
