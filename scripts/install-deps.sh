#!/usr/bin/env bash
# Install the Debian 12 packages concord needs to build, test and benchmark.
# Idempotent: when everything is already installed it does nothing (and
# does not touch the network).  Run as root.
set -euo pipefail

PACKAGES=(
	build-essential          # gcc, make
	perl                     # prove, TAP::Harness, Test::More
	postgresql-15            # the server (and postgresql-client-15, which
	                         # ships PostgreSQL::Test::Cluster for PGXS)
	postgresql-server-dev-15 # PGXS and server headers
	libpq-dev                # libpq headers (the extension is a libpq client)
	postgresql-15-pgtap      # pgTAP extension
	pgtap                    # pgTAP metapackage (pg_prove and friends)
	libipc-run-perl          # needed by PostgreSQL::Test::Cluster
	postgresql-15-pglogical  # only for the benchmarks in bench/
	faketime                 # libfaketime: a node whose clock runs ahead (test/t/230)
)

missing=()
for p in "${PACKAGES[@]}"; do
	status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
	[[ "$status" == "install ok installed" ]] || missing+=("$p")
done

if [[ ${#missing[@]} -eq 0 ]]; then
	echo "install-deps: all ${#PACKAGES[@]} packages already installed"
	exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
	echo "install-deps: missing packages (${missing[*]}); run as root" >&2
	exit 1
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y "${missing[@]}"
