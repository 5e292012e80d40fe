#!/usr/bin/env bash
# System packages the browser tests need: Debian's Chromium (Playwright cannot download its own here).
# Idempotent; skipped where chromium is already installed or where apt is not available.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then exit 0; fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "note: apt-get not found; install Chromium yourself for the browser tests" >&2; exit 0
fi
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
