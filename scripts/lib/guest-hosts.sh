# shellcheck shell=bash
# Sourced by the tests whose QEMU guests sit on a bridge in a network namespace (vmhost/run,
# ntphosts/run), from the repository's root with $repo set: the peers (chronyd, ntpsec) and
# ntp-offset built, Debian's kernel and QEMU (scripts/lib/debian-guest.sh, run in the shared
# cache, which becomes the current directory), and what a bridge of taps needs.
# Out: $chronyd, $cache, and what debian-guest.sh gives ($tree, $kver, its functions).
: "${repo:?the script that sources scripts/lib/guest-hosts.sh sets it}"
# shellcheck disable=SC2034 # an output: the sourcing scripts use it
chronyd=$(scripts/install-peers | tail -n 1)
cargo build --release -q -p ntp-offset
cache=$repo/.peers/kernel
mkdir -p "$cache"
cd "$cache" || exit 1
# shellcheck source=scripts/lib/debian-guest.sh
. "$repo/scripts/lib/debian-guest.sh"
need ip "iproute2 creates the test's namespace and bridge"
[ -c /dev/net/tun ] || modprobe tun || { echo "$0: no /dev/net/tun for the guests' taps" >&2; exit 1; }
modprobe bridge 2>/dev/null || true
