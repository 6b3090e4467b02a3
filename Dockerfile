# PostgreSQL 15 with pg_trickle preloaded. Build:
#   docker build -t pg_trickle:0.35.0 .
# Multi-arch (docs/PACKAGING.md):
#   docker buildx build --platform linux/amd64,linux/arm64 -t <registry>/pg_trickle:0.35.0 --push .
# The image is PostgreSQL's official one; pg_trickle is in shared_preload_libraries, and
# CREATE EXTENSION pg_trickle works in any database.

FROM rust:1-bookworm AS build
ARG PGRX_VERSION=0.18.1
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends curl ca-certificates gnupg lsb-release \
 && install -d /usr/share/postgresql-common/pgdg \
 && curl -fsSL -o /usr/share/postgresql-common/pgdg/apt.postgresql.org.asc \
      https://www.postgresql.org/media/keys/ACCC4CF8.asc \
 && echo "deb [signed-by=/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc] https://apt.postgresql.org/pub/repos/apt bookworm-pgdg main" \
      > /etc/apt/sources.list.d/pgdg.list \
 && apt-get update \
 && apt-get install -y --no-install-recommends postgresql-15 postgresql-server-dev-15 clang libclang-dev pkg-config libssl-dev \
 && rm -rf /var/lib/apt/lists/*
RUN cargo install cargo-pgrx --version "${PGRX_VERSION}" --locked \
 && cargo pgrx init --pg15 /usr/lib/postgresql/15/bin/pg_config
WORKDIR /src
COPY . .
RUN cargo pgrx package -p pg_trickle --pg-config /usr/lib/postgresql/15/bin/pg_config --out-dir /out

FROM postgres:15-bookworm
COPY --from=build /out/usr/lib/postgresql/15/lib/ /usr/lib/postgresql/15/lib/
COPY --from=build /out/usr/share/postgresql/15/extension/ /usr/share/postgresql/15/extension/
# The library must be preloaded: it registers its background workers and settings at startup.
RUN echo "shared_preload_libraries = 'pg_trickle'" >> /usr/share/postgresql/postgresql.conf.sample
