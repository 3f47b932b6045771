#!/usr/bin/env bash
# CI: make the Orthanc DICOM server (Debian's `orthanc`), its DICOMweb plugin (`orthanc-dicomweb`) and the DCMTK tools
# (`dcmtk`) available for tests/integrations. Installs what is missing and keeps the Debian service stopped and
# disabled, so it does not hold ports 4242/8042: the tests start their own throwaway instances on loopback with random
# ports (tests/integrations/orthanc.py loads the plugin).
# This script never fails the run itself: where apt is unavailable it says so, and the Orthanc tests then skip with
# that reason, except on CI (CI set), where they fail because a prerequisite is missing.
set -uo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO="unavailable"; fi
fi

have_orthanc() { command -v Orthanc >/dev/null 2>&1 || [ -x /usr/sbin/Orthanc ]; }
have_dicomweb() { [ -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || [ -f /usr/lib/orthanc/libOrthancDicomWeb.so ]; }

missing=""
have_orthanc || missing="$missing orthanc"
have_dicomweb || missing="$missing orthanc-dicomweb"
command -v storescu >/dev/null 2>&1 || missing="$missing dcmtk"

if [ -n "$missing" ]; then
    if [ "$SUDO" = "unavailable" ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "CI: missing:$missing and apt-get (as root) is unavailable: the Orthanc tests cannot run." >&2
        exit 0
    fi
    echo "CI: installing$missing (apt-get install -y$missing) ..."
    # a policy-rc.d that forbids starting services, so the package's postinst does not start the daemon
    policy=/usr/sbin/policy-rc.d
    created_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null && $SUDO chmod 755 "$policy" && created_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    # shellcheck disable=SC2086
    if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends $missing; }; then
        echo "CI: 'apt-get install -y$missing' failed: the Orthanc tests cannot run." >&2
    fi
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
have_dicomweb && echo "CI: Orthanc's DICOMweb plugin available"
exit 0
