# shellcheck shell=bash
# Network namespaces for the benchmarks, as the Rust tests (testkit's NetnsPair and Lan) and
# the Python ones (qemu_guest.Namespace) make theirs: traffic only inside namespaces the run
# creates, removed when it ends.
#   netns_pair NS_A NS_B DEV_A DEV_B   two namespaces joined by a veth pair (DEV_A in NS_A),
#                                      loopback and the pair up; the caller adds addresses
#   netns_del NS...                    removes them (those already gone are skipped)

netns_pair() {
  local a=$1 b=$2 dev_a=$3 dev_b=$4
  ip netns add "$a"
  ip netns add "$b"
  ip link add "$dev_a" type veth peer name "$dev_b"
  ip link set "$dev_a" netns "$a"
  ip link set "$dev_b" netns "$b"
  ip -n "$a" link set lo up
  ip -n "$b" link set lo up
  ip -n "$a" link set "$dev_a" up
  ip -n "$b" link set "$dev_b" up
}

netns_del() {
  local n
  for n in "$@"; do ip netns del "$n" 2>/dev/null || true; done
}
