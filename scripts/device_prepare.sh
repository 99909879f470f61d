#!/usr/bin/env bash
# Run HERE (where the Debian package registry is reachable), before a device check: downloads the
# Debian 12 packages that the GPU machine lacks to build quicksave and its tests into .deb/
# (ignored by git, about 11 MB), for scripts/device_check.sh to unpack there with dpkg -x.
#   Boost headers (Asio), nlohmann-json, liburing (+ its runtime), GoogleTest/GoogleMock,
#   Google Benchmark, DLPack headers, xxHash (the checksum manifest) and pkgconf (CMake's
#   FindPkgConfig needs a pkg-config).
# Only packages not already in .deb/ are fetched; safe to re-run. The packages are x86-64 ones,
# as the GPU machine is.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  libboost1.74-dev nlohmann-json3-dev liburing-dev liburing2 libgtest-dev libgmock-dev
  libbenchmark-dev libbenchmark1debian libdlpack-dev pkgconf pkgconf-bin libpkgconf3 libxxhash-dev
)

arch=$(dpkg --print-architecture)
if [ "$arch" != amd64 ]; then
  echo "device_prepare: this machine is $arch; the GPU machine needs amd64 packages" >&2
  echo "device_prepare: add amd64 lists (see /work/.library/device/README.md) and re-run" >&2
  exit 1
fi

mkdir -p .deb
missing=()
for p in "${PACKAGES[@]}"; do
  compgen -G ".deb/${p}_*.deb" >/dev/null || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "device_prepare: downloading ${missing[*]}"
  if ! (cd .deb && apt-get download "${missing[@]}"); then
    # Stale or missing package lists: refresh them once and try again.
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
    $SUDO apt-get update -qq
    (cd .deb && apt-get download "${missing[@]}")
  fi
fi

# Every package present, each a readable .deb, one version of each.
status=0
for p in "${PACKAGES[@]}"; do
  files=(.deb/"${p}"_*.deb)
  if [ "${#files[@]}" -ne 1 ] || [ ! -f "${files[0]}" ]; then
    echo "device_prepare: expected exactly one .deb/${p}_*.deb, found ${#files[@]}" >&2
    status=1
    continue
  fi
  dpkg-deb --info "${files[0]}" >/dev/null || { echo "device_prepare: ${files[0]} is not a valid package" >&2; status=1; }
done
du -sh .deb | sed 's/^/device_prepare: /'
exit $status
