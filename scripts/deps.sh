#!/usr/bin/env bash
# Installs what building and testing mailq needs on Debian 12 (bookworm). Idempotent: when
# every package is already installed it does nothing and touches no network.
#
#   scripts/deps.sh            install what is missing (as root, or through sudo)
#   scripts/deps.sh --check    only report what is missing (exit 1 if anything is)
#
# The servers among them (postfix, unbound) are tools the integration tests start themselves
# on loopback ports they choose; the system copies are kept from starting at install time and
# stopped if they run anyway.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config  # toolchain
  libuv1-dev libc-ares-dev libmbedtls-dev libfmt-dev  # libraries mailq links
  nettle-dev libgmp-dev  # DKIM signatures: Ed25519 (mbedTLS 2.28 has none), RSA on GMP
  node-llhttp  # llhttp's C sources, compiled in: the HTTP parser of MTA-STS policy fetches
  libtomlplusplus-dev  # mailq-relay's configuration file
  clang valgrind  # libFuzzer targets (fuzz/), memcheck runs of the adapters
  catch2  # unit tests (2.13)
  postfix unbound swaks python3-aiosmtpd openssl  # servers and tools of the integration tests
  python3-dkim  # dkimpy: the DKIM verifier the signing tests check against
  ldnsutils  # ldns-keygen, ldns-signzone: the DNSSEC-signed zones of the DANE tests
  libnet-ssleay-perl libsasl2-modules  # swaks over TLS; Postfix's SASL client (PLAIN, LOGIN)
  libfuse3-dev fuse3  # the power-cut file system of the crash tests (tests/crash/powercut_fs.cpp)
  nftables iproute2  # network faults made in the tests' own network namespaces
  clang-format  # the repository's formatter
)

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "installed" ]] || missing+=("$p")
done

if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi
if [[ "${1:-}" == "--check" ]]; then
  echo "missing packages: ${missing[*]}" >&2
  exit 1
fi

echo "deps.sh: installing ${missing[*]}"
sudo=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "deps.sh: run as root or install sudo" >&2; exit 1; }
  sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive

# Postfix would otherwise ask how to configure itself; it needs no configuration at all here.
echo "postfix postfix/main_mailer_type select No configuration" |
  "${sudo[@]}" debconf-set-selections

# Keep the package scripts from starting postfix/unbound (a policy-rc.d that says no), unless
# the machine already has its own policy.
policy=/usr/sbin/policy-rc.d
own_policy=0
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
  "${sudo[@]}" chmod 755 "$policy"
  own_policy=1
fi
cleanup() { if [[ $own_policy -eq 1 ]]; then "${sudo[@]}" rm -f "$policy"; fi; }
trap cleanup EXIT

apt_opts=(-o Dpkg::Use-Pty=0 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${apt_opts[@]}" "${missing[@]}" \
  >/tmp/mailq-deps-apt.log 2>&1 || {
  echo "deps.sh: apt-get install failed; its output:" >&2
  cat /tmp/mailq-deps-apt.log >&2
  exit 1
}

# Nothing of ours needs the system MTA or resolver running (tests start their own on free
# loopback ports); stop them should a package script have started them anyway.
if command -v postfix >/dev/null && "${sudo[@]}" postfix status >/dev/null 2>&1; then
  "${sudo[@]}" postfix stop >/dev/null 2>&1 || true
fi
if command -v unbound-control >/dev/null && pgrep -x unbound >/dev/null 2>&1; then
  "${sudo[@]}" unbound-control stop >/dev/null 2>&1 || true
fi
echo "deps.sh: done"
