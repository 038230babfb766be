#!/usr/bin/env bash
# Makes sure Debian's PostgreSQL server binaries are installed (the tests start their own
# throwaway server from them, on loopback, in a temporary folder).
set -euo pipefail
if command -v initdb >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  exit 0
fi
echo "Installing Debian's postgresql package for the test run..."
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null
# The package starts a cluster of its own on port 5432; the tests do not use it.
if command -v pg_ctlcluster >/dev/null 2>&1; then
  for version in /etc/postgresql/*; do
    [ -d "$version/main" ] && $SUDO pg_ctlcluster "$(basename "$version")" main stop 2>/dev/null || true
  done
fi
