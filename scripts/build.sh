#!/usr/bin/env bash
# Build concord with PGXS and install it into the PostgreSQL 15 tree
# (installing needs root).  PG_CONFIG may point to another pg_config.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_CONFIG=${PG_CONFIG:-pg_config}

make -C "$REPO" PG_CONFIG="$PG_CONFIG" -j"$(nproc)"
make -C "$REPO" PG_CONFIG="$PG_CONFIG" install
