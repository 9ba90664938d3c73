#!/usr/bin/env bash
# Install Debian's chromium and chromedriver for the headless-browser report test
# (tests/test_report_browser.py).  Does nothing when /usr/bin/chromium is already there.
# Needs root (apt-get); CI and the development machines run as root.
set -euo pipefail
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core >/dev/null
/usr/bin/chromium --version
