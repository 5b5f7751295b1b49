#!/usr/bin/env bash
# Install the Debian packages the tests and demos use, when missing.
# sipp comes from the package "sip-tester" (apt has no package named sipp).
set -euo pipefail
need=()
command -v tshark >/dev/null 2>&1 || need+=(tshark)
command -v sipp   >/dev/null 2>&1 || need+=(sip-tester)
command -v tcpdump >/dev/null 2>&1 || need+=(tcpdump)
command -v ip      >/dev/null 2>&1 || need+=(iproute2)
command -v kamailio >/dev/null 2>&1 || need+=(kamailio)   # topology kamailio-edge
command -v capinfos >/dev/null 2>&1 || need+=(wireshark-common)
command -v gcc     >/dev/null 2>&1 || need+=(gcc)       # mypyc: the compiled SIP core
[ ${#need[@]} -eq 0 ] && exit 0
# MCX_REQUIRE_TOOLS=1 (CI): what cannot be installed fails here, not as skipped tests.
fail=0; [ "${MCX_REQUIRE_TOOLS:-}" = 1 ] && fail=1
if [ "$(id -u)" != 0 ]; then
    echo "note: not root, so not installing ${need[*]}; tests that need them are skipped" >&2
    exit $fail
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "note: no apt-get; install ${need[*]} yourself to run every test" >&2
    exit $fail
fi
echo "installing Debian packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# The package enables a system-wide kamailio service; the emulator runs its own, per run.
if command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now kamailio >/dev/null 2>&1 || true
fi
