#!/usr/bin/env bash
# CI: make the Orthanc DICOM server (Debian's `orthanc` package) available for tests/integrations.
# Installs it when the `Orthanc` binary is missing and keeps the Debian service stopped and disabled, so it does not
# hold ports 4242/8042: the tests start their own throwaway instance on loopback with random ports.
# Never fails the CI run: when apt is unavailable the Orthanc tests skip with a message saying so.
set -uo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO="unavailable"; fi
fi

have_orthanc() { command -v Orthanc >/dev/null 2>&1 || [ -x /usr/sbin/Orthanc ]; }

if ! have_orthanc; then
    if [ "$SUDO" = "unavailable" ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "CI: Orthanc is not installed and apt-get (as root) is unavailable: the Orthanc tests will skip." >&2
        exit 0
    fi
    echo "CI: installing Orthanc (apt-get install -y orthanc) ..."
    # a policy-rc.d that forbids starting services, so the package's postinst does not start the daemon
    policy=/usr/sbin/policy-rc.d
    created_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null && $SUDO chmod 755 "$policy" && created_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends orthanc; }; then
        echo "CI: 'apt-get install -y orthanc' failed: the Orthanc tests will skip." >&2
    fi
    # dcmtk (storescu/findscu) is optional, for debugging by hand; failures are ignored
    $SUDO apt-get install -y -qq --no-install-recommends dcmtk >/dev/null 2>&1 || true
    if [ "$created_policy" -eq 1 ]; then $SUDO rm -f "$policy"; fi
fi

# stop and disable the packaged service (whatever init system there is); the tests run their own instance
if have_orthanc && [ "$SUDO" != "unavailable" ]; then
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        $SUDO systemctl stop orthanc >/dev/null 2>&1 || true
        $SUDO systemctl disable orthanc >/dev/null 2>&1 || true
    fi
    if [ -x /etc/init.d/orthanc ]; then
        $SUDO /etc/init.d/orthanc stop >/dev/null 2>&1 || true
        command -v update-rc.d >/dev/null 2>&1 && { $SUDO update-rc.d orthanc disable >/dev/null 2>&1 || true; }
    fi
fi

if have_orthanc; then
    echo "CI: Orthanc available: $( (command -v Orthanc || echo /usr/sbin/Orthanc) | head -1) ($( (Orthanc --version 2>/dev/null || /usr/sbin/Orthanc --version 2>/dev/null) | head -1))"
fi
exit 0
