#!/usr/bin/env bash
# One-shot setup on a fresh Debian 12 machine (as root): install the
# packages, build and install concord, then start the three-node demo
# (scripts/demo.sh; stop it with `scripts/demo.sh stop`).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

if [[ $(id -u) -ne 0 ]]; then
	echo "scripts/setup.sh must run as root" >&2
	exit 1
fi

bash "$REPO/scripts/install-deps.sh"
bash "$REPO/scripts/build.sh"
bash "$REPO/scripts/demo.sh"
