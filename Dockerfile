# callwatch in one image: `docker build -t callwatch .` (see docker-compose.yml).
FROM rust:1.94-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin callwatch

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/callwatch /usr/local/bin/callwatch
ENTRYPOINT ["callwatch"]
