#!/usr/bin/env bash
# Installs the system packages the test suite needs (Xvfb + GL/xcb for napari, Orthanc with its
# DICOMweb plugin for the PACS tests) when running as root and they are missing.
set -euo pipefail
need=()
command -v Xvfb >/dev/null || need+=(xvfb)
[ -e /usr/lib/x86_64-linux-gnu/libGL.so.1 ] || [ -e /usr/lib/aarch64-linux-gnu/libGL.so.1 ] || need+=(libgl1)
command -v Orthanc >/dev/null || need+=(orthanc)
ls /usr/share/orthanc/plugins/libOrthancDicomWeb.so >/dev/null 2>&1 || need+=(orthanc-dicomweb)
dpkg -s libxkbcommon-x11-0 libxcb-cursor0 libegl1 >/dev/null 2>&1 || need+=(
    libegl1 libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0
    libxcb-render-util0 libxcb-xinerama0 libxcb-shape0 libxcb-cursor0 libdbus-1-3 libfontconfig1)
if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "missing system packages: ${need[*]} (run as root, or install them with apt-get)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# Debian's orthanc package starts a server listening on all interfaces; the tests start their own
# on 127.0.0.1 with a throw-away config, so keep package scripts from starting services.
policy=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && own_policy=1
fi
trap '[ "$own_policy" = 1 ] && rm -f "$policy"' EXIT
apt-get update -q
apt-get install -y -q "${need[@]}"
