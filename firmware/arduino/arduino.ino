/*
 * ntp-offset DCF77 tick transmitter: Arduino Uno + Ethernet shield (W5100) + DCF77 module.
 * At every DCF77 second mark it sends a tick (docs/tick-protocol.md), signed with
 * HMAC-SHA256, to the configured address. Settings: config.h; docs: docs/firmware.md.
 *
 * Timing: the pin interrupt stamps each edge with micros(); the main loop decodes. The next
 * second's tick is built and signed during the current second, so at the mark only the
 * W5100's SEND command remains (signing takes ~20 ms on a 16 MHz AVR).
 */
/* The Arduino core's own conversions are not ours to warn about (the Makefile's -Wconversion). */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wconversion"
#pragma GCC diagnostic ignored "-Wsign-conversion"
#include <Arduino.h>
#include <EEPROM.h>
#include <avr/sleep.h>
#pragma GCC diagnostic pop

#include "config.h"
#include "dcf77.h"
#include "dhcp.h"
#include "tick.h"
#include "w5100.h"

#define TICK_SOCKET 0
static const uint8_t destination[4] = CONFIG_DESTINATION;
#if CONFIG_DHCP
static const struct w5100_config net = {CONFIG_MAC, {0}, {0}, {0}};
static struct dhcp dhcp;
static bool net_up;
#else
static const struct w5100_config net = {CONFIG_MAC, CONFIG_IP, CONFIG_SUBNET, CONFIG_GATEWAY};
static const bool net_up = true;
#endif
/* Set after a tick went out: the rest of the second is free for DHCP's SPI traffic. */
static bool quiet;
static uint8_t key[32];
static uint16_t key_id = CONFIG_KEY_ID;

/* Edges from the interrupt: micros() and level, in a small ring. */
#define EDGES 8
static volatile uint32_t edge_us[EDGES];
static volatile uint8_t edge_high[EDGES];
static volatile uint8_t edge_head, edge_tail;

static struct dcf77 decoder;
/* The next second's tick, signed ahead in both states it can have: [0] synchronized, [1] holdover. */
static struct tick next[2];
static uint8_t next_wire[2][TICK_AUTH_LEN];
static uint8_t next_len[2];
static bool next_ready;
static uint32_t session, sequence;
static uint8_t last_state = 0xff;

/*
 * Sends that failed: the chip's ARP for the destination went unanswered (TIMEOUT), there was
 * no room in its buffer, or a SEND never completed (erratum 1; the socket is reopened).
 * Reported on the serial console at the first failure, then at most once a minute.
 */
static uint32_t sends_failed, sends_hung;
static bool failure_unreported;
static uint32_t reported_ms;

static void on_edge(void)
{
	uint8_t h = edge_head, n = (uint8_t)((h + 1) % EDGES);

	if (n == edge_tail)
		return; /* full: drop (the flywheel covers a lost second) */
	edge_us[h] = micros();
	edge_high[h] = (uint8_t)(digitalRead(CONFIG_DCF77_PIN) ^ CONFIG_DCF77_INVERTED);
	edge_head = n;
}

/*
 * micros() widened to 64 bits (it wraps every 71 minutes). Edge stamps can be a little older
 * than the last reading; only a backwards jump of more than half the range is a wrap.
 */
static int64_t widen(uint32_t us)
{
	static uint32_t last;
	static int64_t base;

	if (us < last && last - us > 0x80000000UL)
		base += 0x100000000LL;
	else if (us < last)
		return base + us; /* an older stamp within the current turn */
	last = us;
	return base + us;
}

static uint8_t hex_nibble(char c)
{
	return (uint8_t)(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
}

static void load_key(void)
{
	/* EEPROM: 'K', key id (2 bytes), 32 key bytes; else the compiled-in key. */
	if (EEPROM.read(0) == 'K') {
		key_id = (uint16_t)(EEPROM.read(1) << 8 | EEPROM.read(2));
		for (uint8_t i = 0; i < 32; i++)
			key[i] = EEPROM.read(3 + i);
		return;
	}
	for (uint8_t i = 0; i < 32; i++)
		key[i] = (uint8_t)(hex_nibble(CONFIG_KEY_HEX[2 * i]) << 4 |
				   hex_nibble(CONFIG_KEY_HEX[2 * i + 1]));
}

/* Serial console: `key ID HEX` stores a key in EEPROM. */
static void serial_command(void)
{
	static char line[80];
	static uint8_t n;

	while (Serial.available()) {
		char c = (char)Serial.read();

		if (c != '\n' && c != '\r' && n < sizeof(line) - 1) {
			line[n++] = c;
			continue;
		}
		line[n] = 0;
		n = 0;
		unsigned id;
		char hex[65];
		if (sscanf(line, "key %u %64s", &id, hex) == 2 && strlen(hex) == 64) {
			EEPROM.write(0, 'K');
			EEPROM.write(1, (uint8_t)(id >> 8));
			EEPROM.write(2, (uint8_t)id);
			for (uint8_t i = 0; i < 32; i++)
				EEPROM.write(3 + i, (uint8_t)(hex_nibble(hex[2 * i]) << 4 |
							      hex_nibble(hex[2 * i + 1])));
			load_key();
			Serial.println(F("key stored"));
		} else if (line[0]) {
			Serial.println(F("commands: key ID HEX64"));
		}
	}
}

/* EEPROM after the key: a boot counter, so that every start has a session of its own. */
#define EEPROM_BOOTS 35

/*
 * The session id: the boot counter (kept in EEPROM) in the high half, so that consecutive
 * starts never repeat a session (receivers would take its sequence 0 for a replay), and
 * what entropy an Uno has (a floating analog pin, the time setup took) in the low half.
 */
static uint32_t new_session(void)
{
	uint16_t boots = (uint16_t)(EEPROM.read(EEPROM_BOOTS) << 8 | EEPROM.read(EEPROM_BOOTS + 1));

	boots++;
	EEPROM.update(EEPROM_BOOTS, (uint8_t)(boots >> 8));
	EEPROM.update(EEPROM_BOOTS + 1, (uint8_t)boots);
	return (uint32_t)boots << 16 | (uint16_t)((unsigned)analogRead(0) ^ (uint16_t)micros());
}

static void note_send(enum w5100_send_status st)
{
	if (st == W5100_SEND_TIMEOUT) {
		sends_failed++;
		failure_unreported = true;
	}
}

/* Before a tick: the last send must have ended, and nothing may be arriving (erratum 1). */
static void ready_to_send(void)
{
	enum w5100_send_status st = w5100_send_status(TICK_SOCKET);

	note_send(st);
	if (st == W5100_SENDING) {
		sends_hung++;
		failure_unreported = true;
		w5100_reopen_udp(TICK_SOCKET, CONFIG_SOURCE_PORT);
	}
	w5100_drain(TICK_SOCKET);
}

static bool send_tick(const uint8_t *wire, uint8_t len)
{
	if (w5100_send(TICK_SOCKET, destination, CONFIG_PORT, wire, len))
		return true;
	sends_failed++;
	failure_unreported = true;
	return false;
}

/* In the quiet part of a second, after a tick went out: the serial port is slow. */
static void report_failures(void)
{
	if (!failure_unreported || (reported_ms && millis() - reported_ms < 60000UL))
		return;
	failure_unreported = false;
	reported_ms = millis() | 1;
	Serial.print(F("w5100: sends failed: "));
	Serial.print(sends_failed);
	Serial.print(F(" (no ARP answer from the destination? see docs/firmware.md), hung: "));
	Serial.println(sends_hung);
}

/*
 * Signs the next tick in the states of `which` (bit 0 synchronized, bit 1 holdover).
 * `leap_second`: it is the inserted 23:59:60, whose number repeats 23:59:59's.
 */
static void prepare(int64_t second, bool leap_announced, bool leap_second, uint8_t which)
{
	for (uint8_t i = 0; i < 2; i++) {
		struct tick *t = &next[i];

		if (!(which & (1 << i)))
			continue;
		t->kind = TICK_KIND_TICK;
		t->flags = TICK_FLAG_FOLLOW_UP | (leap_second ? TICK_FLAG_LEAP_SECOND : 0);
		t->state = i ? TICK_HOLDOVER : TICK_SYNCHRONIZED;
		t->leap = leap_announced ? TICK_LEAP_INSERT : TICK_LEAP_NONE;
		t->source = TICK_SOURCE_DCF77;
		t->stratum = 0;
		t->key_id = key_id;
		t->transmitter = CONFIG_TRANSMITTER;
		t->session = session;
		t->sequence = sequence;
		t->error_us = TICK_ERROR_UNKNOWN;
		t->second = second;
		t->tx_offset_ns = 0;
		next_len[i] = (uint8_t)tick_encode(t, key, 32, next_wire[i]);
	}
	next_ready = true;
}

static void on_mark(const struct dcf77_mark *m)
{
	uint8_t v = m->state == DCF77_SYNCHRONIZED ? 0 : 1;

	if (m->state != last_state) {
		last_state = m->state;
		Serial.println(m->state == DCF77_UNSYNCHRONIZED ? F("dcf77: phase locked, decoding") :
			       m->state == DCF77_SYNCHRONIZED ? F("dcf77: synchronized") :
								 F("dcf77: holdover"));
	}
	if (m->state == DCF77_UNSYNCHRONIZED || !net_up)
		return; /* no tick until the second and our address are known */
	/* The signed ticks fit unless the second differs (the first after sync, a new session). */
	if (!next_ready || next[v].second != m->second || next[v].sequence != sequence ||
	    (next[v].leap == TICK_LEAP_INSERT) != m->leap_announced ||
	    !(next[v].flags & TICK_FLAG_LEAP_SECOND) != !m->leap_second)
		/* late: sign just this one */
		prepare(m->second, m->leap_announced, m->leap_second, (uint8_t)(1 << v));
	ready_to_send();
	/*
	 * The follow-up: when the tick left (the SEND command) minus its mark, so receivers take
	 * the mark itself. It covers the window a holdover mark waits and any loop latency.
	 */
	if (send_tick(next_wire[v], next_len[v])) {
		struct tick fu = next[v];
		uint8_t wire[TICK_AUTH_LEN];
		int64_t sent_us = widen(micros());

		fu.kind = TICK_KIND_FOLLOW_UP;
		fu.flags = 0;
		fu.tx_offset_ns = (sent_us - m->at_us) * 1000;
		if (fu.tx_offset_ns > -1000000000LL && fu.tx_offset_ns < 1000000000LL) {
			uint32_t t0 = micros();
			enum w5100_send_status st;

			/* The tick must be out first; a broadcast needs no ARP, so this is brief. */
			while ((st = w5100_send_status(TICK_SOCKET)) == W5100_SENDING &&
			       micros() - t0 < 20000UL)
				;
			note_send(st);
			/* No follow-up for a tick that did not leave (or not yet). */
			if (st == W5100_SENT)
				send_tick(wire, (uint8_t)tick_encode(&fu, key, 32, wire));
		}
	}
	next_ready = false;
	sequence++;
	quiet = true;
	/*
	 * Signed now, for the next mark, in both states. After 23:59:59 in an announced leap
	 * minute comes the leap second, which repeats the number (docs/dcf77.md).
	 */
	{
		bool leap_next = m->leap_announced && !m->leap_second && m->second % 3600 == 3599;

		prepare(leap_next ? m->second : m->second + 1, m->leap_announced, leap_next, 3);
	}
	report_failures();
}

/* DHCP, where it cannot delay a tick: after one went out, or while none are sent. */
static void network_step(void)
{
#if CONFIG_DHCP
	static uint32_t last_ms;
	bool ticking = net_up && decoder.synced;

	if (!quiet && (ticking || millis() - last_ms < 100))
		return;
	quiet = false;
	last_ms = millis();
	if (dhcp_step(&dhcp, net.mac, last_ms)) {
		w5100_set_address(dhcp.ip, dhcp.subnet, dhcp.router);
		net_up = dhcp_bound(&dhcp);
		Serial.print(net_up ? F("dhcp: address ") : F("dhcp: lost the address "));
		for (uint8_t i = 0; i < 4; i++) {
			Serial.print(dhcp.ip[i]);
			Serial.print(i < 3 ? '.' : '\n');
		}
	}
#endif
}

/*
 * The loop sleeps (idle mode: the timers, the pin interrupt and the UART run on) until the
 * next interrupt, unless an edge waits or a decoder deadline is near. Timer 0 wakes the CPU
 * every 1.024 ms, so within two of its periods of a deadline the loop stays awake as it
 * always did, and a holdover mark leaves as promptly. Asleep, the loop stops polling the
 * W5100 over SPI tens of thousands of times a second, and simavr skips the idle cycles
 * (they were most of the firmware tests' simulated time).
 */
#define AWAKE_BEFORE_DEADLINE_US 2100

static void idle(void)
{
	int64_t deadline;

	if (dcf77_next_deadline(&decoder, &deadline) &&
	    deadline - widen(micros()) < AWAKE_BEFORE_DEADLINE_US)
		return;
	cli();
	if (edge_tail == edge_head) {
		sleep_enable();
		/* SEI takes effect after the next instruction: no interrupt comes between. */
		sei();
		sleep_cpu();
		sleep_disable();
	}
	sei();
}

void setup(void)
{
	Serial.begin(115200);
	Serial.println(F("ntp-offset DCF77 transmitter"));
	load_key();
	session = new_session();
	Serial.print(F("session "));
	Serial.println(session, HEX);
	if (!w5100_begin(&net) || !w5100_open_udp(TICK_SOCKET, CONFIG_SOURCE_PORT))
		Serial.println(F("w5100: not found (is the Ethernet shield on?)"));
#if CONFIG_DHCP
	dhcp_init(&dhcp, session);
	Serial.println(F("dhcp: asking for an address"));
#endif
	dcf77_init(&decoder, CONFIG_CALIBRATION_US, 3600LL * 1000000LL);
	pinMode(CONFIG_DCF77_PIN, INPUT);
	attachInterrupt(digitalPinToInterrupt(CONFIG_DCF77_PIN), on_edge, CHANGE);
	/* avr-libc's macro narrows an int; idle mode is SM2..0 = 000 (the ATmega328P's SMCR). */
	SMCR = 0;
	Serial.println(F("dcf77: waiting for the signal"));
}

void loop(void)
{
	struct dcf77_marks marks;

	marks.n = 0;
	int64_t deadline;

	while (edge_tail != edge_head) {
		uint8_t t = edge_tail;

		dcf77_edge(&decoder, widen(edge_us[t]), edge_high[t], &marks);
		edge_tail = (uint8_t)((t + 1) % EDGES);
	}
	if (dcf77_next_deadline(&decoder, &deadline)) {
		int64_t now = widen(micros());

		if (now >= deadline)
			dcf77_poll(&decoder, now, &marks);
	}
	for (uint8_t i = 0; i < marks.n; i++)
		on_mark(&marks.m[i]);
	/* Just synchronized (at a minute mark): sign the first tick before its mark, too. */
	if (decoder.synced && !next_ready && decoder.index >= 0)
		prepare(decoder.minute_start + decoder.index, decoder.leap_announced, false, 3);
	note_send(w5100_send_status(TICK_SOCKET));
	network_step();
	serial_command();
	idle();
}
