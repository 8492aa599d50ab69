// SPDX-License-Identifier: GPL-2.0
/*
 * crudepps: a PPS source fired by tick packets.
 *
 * A netfilter hook at the earliest PRE_ROUTING priority (IPv4 and IPv6, initial network
 * namespace only) takes a timestamp first, then looks for UDP datagrams to the configured
 * port carrying an ntp-offset tick (docs/tick-protocol.md) or, if enabled, the original
 * 4-byte "time" broadcast, and fires a PPS assert event with that timestamp.
 *
 * The tick's MAC is not verified here: this module checks structure, transmitter and that
 * second and sequence advance. Where ticks must be authenticated, use `ntp-offset pulse
 * listen`, which verifies the MAC, instead of this module.
 *
 * Counters are in /sys/kernel/crudepps/, one value per file.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/inet.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/kobject.h>
#include <linux/module.h>
#include <linux/netfilter.h>
#include <linux/netfilter_ipv4.h>
#include <linux/netfilter_ipv6.h>
#include <linux/pps_kernel.h>
#include <linux/skbuff.h>
#include <linux/spinlock.h>
#include <linux/sysfs.h>
#include <linux/udp.h>
#include <net/ipv6.h>
#include <net/net_namespace.h>
#include <asm/unaligned.h>

static ushort port = 8123;
module_param(port, ushort, 0444);
MODULE_PARM_DESC(port, "UDP port of the ticks (default 8123)");

static bool legacy;
module_param(legacy, bool, 0444);
MODULE_PARM_DESC(legacy, "Also fire on the original 4-byte \"time\" broadcasts (default off)");

static ushort legacy_port = 8000;
module_param(legacy_port, ushort, 0444);
MODULE_PARM_DESC(legacy_port, "UDP port of the \"time\" broadcasts (default 8000)");

static char *source = "";
module_param(source, charp, 0444);
MODULE_PARM_DESC(source, "Accept packets only from this IPv4 or IPv6 address (default any)");

static uint transmitter;
module_param(transmitter, uint, 0444);
MODULE_PARM_DESC(transmitter, "Accept ticks only from this transmitter id (default 0: any)");

/* Tick protocol v1 (docs/tick-protocol.md): big-endian, 48 bytes, or 64 with a MAC. */
/*
 * Where the fields read here start (docs/tick-protocol.md); the project's Rust tests check
 * them against crates/proto/src/tick.rs.
 */
#define TICK_AT_MAGIC 0
#define TICK_AT_VERSION 4
#define TICK_AT_KIND 5
#define TICK_AT_FLAGS 6
#define TICK_AT_STATE 7
#define TICK_AT_LEAP 8
#define TICK_AT_SOURCE 9
#define TICK_AT_KEY_ID 12
#define TICK_AT_TRANSMITTER 16
#define TICK_AT_SESSION 20
#define TICK_AT_SEQUENCE 24
#define TICK_AT_SECOND 32
#define TICK_AT_TX_OFFSET 40
#define TICK_BODY_LEN 48
#define TICK_AUTH_LEN 64
#define TICK_VERSION 1
#define TICK_KIND_TICK 1
#define TICK_KIND_FOLLOW_UP 2
#define TICK_FLAG_LEAP_SECOND 0x04
#define TICK_STATE_UNSYNCHRONIZED 2
#define TICK_MAX_LEAP 2
#define TICK_MAX_SOURCE 3
#define LEGACY_LEN 4
/* A followed transmitter silent for this long may be replaced by another. */
#define TRANSMITTER_TIMEOUT_NS (3 * NSEC_PER_SEC)
/* Legacy pulses carry no second: a second one within this time is a duplicate. */
#define LEGACY_MIN_INTERVAL_NS (NSEC_PER_SEC / 2)

enum counter {
	C_MATCHED,
	C_LEGACY_MATCHED,
	C_FOLLOW_UPS,
	C_TRUNCATED,
	C_BAD_LENGTH,
	C_BAD_MAGIC,
	C_BAD_VERSION,
	C_MALFORMED,
	C_UNSYNCHRONIZED,
	C_OTHER_SOURCE,
	C_OTHER_TRANSMITTER,
	C_REPLAY,
	C_FRAGMENT,
	C_CHECKSUM,
	C_LEGACY_DISABLED,
	C_LEGACY_NOT_BROADCAST,
	C_LEGACY_TOO_SOON,
	C_COUNT,
};

static atomic_long_t counters[C_COUNT];

struct counter_attr {
	struct kobj_attribute kattr;
	enum counter id;
};

static ssize_t counter_show(struct kobject *kobj, struct kobj_attribute *attr, char *buf)
{
	const struct counter_attr *ca = container_of(attr, struct counter_attr, kattr);

	return sysfs_emit(buf, "%ld\n", atomic_long_read(&counters[ca->id]));
}

#define COUNTER(_name, _id) { .kattr = __ATTR(_name, 0444, counter_show, NULL), .id = _id }

static struct counter_attr counter_attrs[C_COUNT] = {
	COUNTER(matched, C_MATCHED),
	COUNTER(legacy_matched, C_LEGACY_MATCHED),
	COUNTER(follow_ups, C_FOLLOW_UPS),
	COUNTER(rejected_truncated, C_TRUNCATED),
	COUNTER(rejected_length, C_BAD_LENGTH),
	COUNTER(rejected_magic, C_BAD_MAGIC),
	COUNTER(rejected_version, C_BAD_VERSION),
	COUNTER(rejected_malformed, C_MALFORMED),
	COUNTER(rejected_unsynchronized, C_UNSYNCHRONIZED),
	COUNTER(rejected_source, C_OTHER_SOURCE),
	COUNTER(rejected_transmitter, C_OTHER_TRANSMITTER),
	COUNTER(rejected_replay, C_REPLAY),
	COUNTER(rejected_fragment, C_FRAGMENT),
	COUNTER(rejected_checksum, C_CHECKSUM),
	COUNTER(rejected_legacy_disabled, C_LEGACY_DISABLED),
	COUNTER(rejected_legacy_not_broadcast, C_LEGACY_NOT_BROADCAST),
	COUNTER(rejected_legacy_too_soon, C_LEGACY_TOO_SOON),
};

static struct attribute *counter_attr_ptrs[C_COUNT + 1];
static const struct attribute_group counter_group = { .attrs = counter_attr_ptrs };
static struct kobject *crudepps_kobj;

/* The transmitter followed, and what it sent last. */
struct follow_state {
	spinlock_t lock;	/* guards the fields below; hooks run on any CPU */
	bool valid;
	u32 transmitter;
	u32 session;
	u32 sequence;
	s64 second;
	u64 last_seen_ns;
	u64 last_legacy_ns;
};

static struct follow_state follow = {
	.lock = __SPIN_LOCK_UNLOCKED(follow.lock),
};

static struct pps_device *pps;

/* The allowed source address, parsed from the "source" parameter. */
static int source_family;	/* 0: any */
static __be32 source_v4;
static struct in6_addr source_v6;

static const char * const counter_names[C_COUNT] = {
	[C_TRUNCATED] = "truncated",
	[C_BAD_LENGTH] = "wrong length",
	[C_BAD_MAGIC] = "bad magic",
	[C_BAD_VERSION] = "unsupported version",
	[C_MALFORMED] = "malformed",
	[C_UNSYNCHRONIZED] = "transmitter unsynchronized",
	[C_OTHER_SOURCE] = "other source address",
	[C_OTHER_TRANSMITTER] = "other transmitter",
	[C_REPLAY] = "replayed or duplicate",
	[C_FRAGMENT] = "fragmented",
	[C_CHECKSUM] = "bad UDP checksum",
	[C_LEGACY_DISABLED] = "legacy packet (legacy=0)",
	[C_LEGACY_NOT_BROADCAST] = "legacy packet not broadcast",
	[C_LEGACY_TOO_SOON] = "legacy packet too soon",
};

static void reject(enum counter why)
{
	atomic_long_inc(&counters[why]);
	pr_info_ratelimited("dropped a packet: %s\n", counter_names[why]);
}

/* Checks a tick's fields; returns the counter that rejects it, or C_COUNT if it is good. */
static enum counter check_tick(const u8 *b, unsigned int len, u64 now_ns)
{
	u32 id, session, sequence;
	s64 second;
	enum counter verdict = C_COUNT;

	if (len < 4 || memcmp(b + TICK_AT_MAGIC, "NOTK", 4) != 0)
		return C_BAD_MAGIC;
	if (len <= TICK_AT_VERSION || b[TICK_AT_VERSION] != TICK_VERSION)
		return C_BAD_VERSION;
	if (len < TICK_BODY_LEN)
		return C_TRUNCATED;
	/* Key id 0: no MAC follows. The MAC itself is not checked here (see the top). */
	if (len != (get_unaligned_be16(b + TICK_AT_KEY_ID) ? TICK_AUTH_LEN : TICK_BODY_LEN))
		return C_BAD_LENGTH;
	if ((b[TICK_AT_KIND] != TICK_KIND_TICK && b[TICK_AT_KIND] != TICK_KIND_FOLLOW_UP) ||
	    b[TICK_AT_STATE] > TICK_STATE_UNSYNCHRONIZED || b[TICK_AT_LEAP] > TICK_MAX_LEAP ||
	    b[TICK_AT_SOURCE] > TICK_MAX_SOURCE)
		return C_MALFORMED;
	/* A follow-up carries a TX timestamp for user space; no event. */
	if (b[TICK_AT_KIND] == TICK_KIND_FOLLOW_UP)
		return C_FOLLOW_UPS;
	if (get_unaligned_be64(b + TICK_AT_TX_OFFSET) != 0)
		return C_MALFORMED;
	if (b[TICK_AT_STATE] == TICK_STATE_UNSYNCHRONIZED)
		return C_UNSYNCHRONIZED;

	id = get_unaligned_be32(b + TICK_AT_TRANSMITTER);
	session = get_unaligned_be32(b + TICK_AT_SESSION);
	sequence = get_unaligned_be32(b + TICK_AT_SEQUENCE);
	second = (s64)get_unaligned_be64(b + TICK_AT_SECOND);
	if (transmitter && id != transmitter)
		return C_OTHER_TRANSMITTER;

	spin_lock_bh(&follow.lock);
	if (follow.valid && id != follow.transmitter &&
	    now_ns - follow.last_seen_ns < TRANSMITTER_TIMEOUT_NS) {
		verdict = C_OTHER_TRANSMITTER;
	} else if (follow.valid && id == follow.transmitter &&
		   (second < follow.second ||
		    (second == follow.second && !(b[TICK_AT_FLAGS] & TICK_FLAG_LEAP_SECOND)) ||
		    (session == follow.session && (s32)(sequence - follow.sequence) <= 0))) {
		/*
		 * The second must rise, across sessions too (the inserted leap second repeats
		 * 23:59:59's number, and says so); the sequence within a session.
		 */
		verdict = C_REPLAY;
	} else {
		if (!follow.valid || id != follow.transmitter)
			pr_info("following transmitter %#010x\n", id);
		follow.valid = true;
		follow.transmitter = id;
		follow.session = session;
		follow.sequence = sequence;
		follow.second = second;
		follow.last_seen_ns = now_ns;
	}
	spin_unlock_bh(&follow.lock);
	return verdict;
}

static enum counter check_legacy(const struct sk_buff *skb, u64 now_ns)
{
	enum counter verdict = C_COUNT;

	if (!legacy)
		return C_LEGACY_DISABLED;
	/* As originally: only broadcasts (link-layer broadcast, e.g. to 198.18.1.255). */
	if (skb->pkt_type != PACKET_BROADCAST)
		return C_LEGACY_NOT_BROADCAST;
	/*
	 * A legacy pulse has no second number, so spacing is all there is to go by. With one
	 * sender, pulses closer than this come from a host that did not run for over a second:
	 * those queued meanwhile arrive in one burst, stamped microseconds apart. The first
	 * fires; the rest are dropped and counted (ntphosts/hosts_test.py shows it).
	 */
	spin_lock_bh(&follow.lock);
	if (follow.last_legacy_ns && now_ns - follow.last_legacy_ns < LEGACY_MIN_INTERVAL_NS)
		verdict = C_LEGACY_TOO_SOON;
	else
		follow.last_legacy_ns = now_ns;
	spin_unlock_bh(&follow.lock);
	return verdict;
}

/* The UDP payload at thoff, for a datagram to one of our ports; fires the event if valid. */
static void handle_udp(struct sk_buff *skb, unsigned int thoff, u8 pf, bool fragment,
		       bool other_source, struct pps_event_time *ts)
{
	struct udphdr _uh;
	const struct udphdr *uh;
	u8 buf[TICK_AUTH_LEN + 1];
	const u8 *payload;
	unsigned int len, dport;
	bool is_legacy_port;
	enum counter verdict;
	u64 now_ns = ktime_get_mono_fast_ns();

	uh = skb_header_pointer(skb, thoff, sizeof(_uh), &_uh);
	if (!uh)
		return;
	dport = ntohs(uh->dest);
	/* The original "time" packets were IPv4 broadcasts only. */
	is_legacy_port = pf == NFPROTO_IPV4 && legacy_port && dport == legacy_port && dport != port;
	if (dport != port && !is_legacy_port)
		return;
	if (other_source) {
		reject(C_OTHER_SOURCE);
		return;
	}
	if (fragment) {
		reject(C_FRAGMENT);
		return;
	}
	len = ntohs(uh->len);
	if (len < sizeof(_uh) || thoff + len > skb->len) {
		reject(C_TRUNCATED);
		return;
	}
	len -= sizeof(_uh);
	/* An IPv4 UDP checksum of 0 means none was computed. */
	if ((pf == NFPROTO_IPV6 || uh->check) &&
	    nf_checksum(skb, NF_INET_PRE_ROUTING, thoff, IPPROTO_UDP, pf)) {
		reject(C_CHECKSUM);
		return;
	}
	if (len > TICK_AUTH_LEN) {
		reject(C_BAD_LENGTH);
		return;
	}
	payload = skb_header_pointer(skb, thoff + sizeof(_uh), len, buf);
	if (!payload) {
		reject(C_TRUNCATED);
		return;
	}
	if (is_legacy_port) {
		if (len != LEGACY_LEN || memcmp(payload, "time", LEGACY_LEN) != 0)
			verdict = C_BAD_MAGIC;
		else
			verdict = check_legacy(skb, now_ns);
		if (verdict != C_COUNT) {
			reject(verdict);
			return;
		}
		atomic_long_inc(&counters[C_LEGACY_MATCHED]);
		pps_event(pps, ts, PPS_CAPTUREASSERT, NULL);
		return;
	}
	verdict = check_tick(payload, len, now_ns);
	if (verdict == C_FOLLOW_UPS) {
		atomic_long_inc(&counters[C_FOLLOW_UPS]);
		return;
	}
	if (verdict != C_COUNT) {
		reject(verdict);
		return;
	}
	atomic_long_inc(&counters[C_MATCHED]);
	pps_event(pps, ts, PPS_CAPTUREASSERT, NULL);
}

static unsigned int hook_ipv4(void *priv, struct sk_buff *skb, const struct nf_hook_state *state)
{
	struct pps_event_time ts;
	const struct iphdr *iph;
	bool other;

	/* First thing: every later instruction would be jitter. */
	pps_get_ts(&ts);
	iph = ip_hdr(skb);
	if (iph->protocol != IPPROTO_UDP)
		return NF_ACCEPT;
	/* Before defragmentation: only a first fragment has the UDP header. */
	if (ntohs(iph->frag_off) & IP_OFFSET)
		return NF_ACCEPT;
	other = source_family && (source_family != NFPROTO_IPV4 || iph->saddr != source_v4);
	handle_udp(skb, ip_hdrlen(skb), NFPROTO_IPV4, ip_is_fragment(iph), other, &ts);
	return NF_ACCEPT;
}

static unsigned int hook_ipv6(void *priv, struct sk_buff *skb, const struct nf_hook_state *state)
{
	struct pps_event_time ts;
	u8 nexthdr;
	__be16 frag_off = 0;
	int thoff;
	bool other;

	pps_get_ts(&ts);
	nexthdr = ipv6_hdr(skb)->nexthdr;
	thoff = ipv6_skip_exthdr(skb, sizeof(struct ipv6hdr), &nexthdr, &frag_off);
	if (thoff < 0 || nexthdr != IPPROTO_UDP)
		return NF_ACCEPT;
	/* A non-first fragment: the "UDP header" would be payload bytes. */
	if (frag_off & htons(IP6_OFFSET))
		return NF_ACCEPT;
	other = source_family && (source_family != NFPROTO_IPV6 ||
				  !ipv6_addr_equal(&ipv6_hdr(skb)->saddr, &source_v6));
	/* frag_off is non-zero here only for a first fragment (MF set). */
	handle_udp(skb, thoff, NFPROTO_IPV6, frag_off != 0, other, &ts);
	return NF_ACCEPT;
}

static const struct nf_hook_ops hook_ops[] = {
	{
		.hook = hook_ipv4,
		.pf = NFPROTO_IPV4,
		.hooknum = NF_INET_PRE_ROUTING,
		.priority = NF_IP_PRI_FIRST,
	},
	{
		.hook = hook_ipv6,
		.pf = NFPROTO_IPV6,
		.hooknum = NF_INET_PRE_ROUTING,
		.priority = NF_IP6_PRI_FIRST,
	},
};

static struct pps_source_info pps_info = {
	.name = KBUILD_MODNAME,
	.path = "",
	.mode = PPS_CAPTUREASSERT | PPS_OFFSETASSERT | PPS_CANWAIT | PPS_TSFMT_TSPEC,
	.owner = THIS_MODULE,
};

static int parse_source(void)
{
	if (!source || !*source)
		return 0;
	if (in4_pton(source, -1, (u8 *)&source_v4, -1, NULL)) {
		source_family = NFPROTO_IPV4;
		return 0;
	}
	if (in6_pton(source, -1, source_v6.s6_addr, -1, NULL)) {
		source_family = NFPROTO_IPV6;
		return 0;
	}
	pr_err("source=%s is neither an IPv4 nor an IPv6 address\n", source);
	return -EINVAL;
}

static int __init crudepps_init(void)
{
	int i, err;

	if (!port) {
		pr_err("port=0: give the UDP port of the ticks\n");
		return -EINVAL;
	}
	err = parse_source();
	if (err)
		return err;
	for (i = 0; i < C_COUNT; i++) {
		atomic_long_set(&counters[i], 0);
		counter_attr_ptrs[i] = &counter_attrs[i].kattr.attr;
	}
	crudepps_kobj = kobject_create_and_add(KBUILD_MODNAME, kernel_kobj);
	if (!crudepps_kobj)
		return -ENOMEM;
	err = sysfs_create_group(crudepps_kobj, &counter_group);
	if (err)
		goto put_kobj;
	pps = pps_register_source(&pps_info, PPS_CAPTUREASSERT | PPS_OFFSETASSERT);
	if (IS_ERR(pps)) {
		err = PTR_ERR(pps);
		pr_err("cannot register a PPS source: %d\n", err);
		goto put_kobj;
	}
	/* The initial namespace only: one PPS device is the host's, not a container's. */
	err = nf_register_net_hooks(&init_net, hook_ops, ARRAY_SIZE(hook_ops));
	if (err) {
		pr_err("cannot register the netfilter hooks: %d\n", err);
		goto unregister_pps;
	}
	if (legacy)
		pr_info("pps%u: ticks on UDP port %u, \"time\" broadcasts on port %u\n",
			pps->id, port, legacy_port);
	else
		pr_info("pps%u: ticks on UDP port %u\n", pps->id, port);
	return 0;

unregister_pps:
	pps_unregister_source(pps);
put_kobj:
	kobject_put(crudepps_kobj);
	return err;
}

static void __exit crudepps_exit(void)
{
	/* Hooks first: once unregistered (with an RCU grace period), no event can fire. */
	nf_unregister_net_hooks(&init_net, hook_ops, ARRAY_SIZE(hook_ops));
	pps_unregister_source(pps);
	kobject_put(crudepps_kobj);
	pr_info("unloaded\n");
}

module_init(crudepps_init);
module_exit(crudepps_exit);

MODULE_AUTHOR("ntp-offset developers");
MODULE_DESCRIPTION("PPS source fired by tick packets (netfilter PRE_ROUTING)");
MODULE_LICENSE("GPL");
