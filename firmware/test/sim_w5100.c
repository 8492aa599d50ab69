/*
 * End-to-end run of the transmitter firmware in simavr: an ATmega328P at 16 MHz executes
 * target/firmware/arduino.elf, a DCF77 signal case (testvectors/dcf77-signals.txt) drives
 * pin D2, and a model of the W5100 on the SPI bus records every UDP datagram the firmware
 * sends from socket 0 and answers its DHCP requests on socket 1 (sim_dhcp.c). Output lines:
 *   packet SIM_US CASE_MS DEST_IP DEST_PORT HEX     a datagram from socket 0 (ticks)
 *   dhcp SIM_US CASE_MS WHAT                        a DHCP request (discover, request, renew)
 *   address SIM_US CASE_MS IP                       the firmware set its IP address
 *   timeout SIM_US CASE_MS DEST_IP DEST_PORT        a datagram to a host that answers no
 *                                                   ARP: the chip gives up (Sn_IR TIMEOUT)
 *   reset SIM_US CASE_MS                            the AVR was reset (RESET_AT_MS)
 * where CASE_MS is the time on the case's clock. Only the limited broadcast and the DHCP
 * server (198.18.1.1) answer ARP here; a SEND to anything else ends in TIMEOUT after the
 * retry time the firmware set (RTR * (RCR + 1)), as on the chip. The AVR's EEPROM lives
 * through a reset, as on the board. The Rust test (crates/ntp-offset/tests/integration/firmware.rs)
 * checks the output with the project's tick decoder.
 *
 * Usage: sim_w5100 FIRMWARE.elf SIGNALS.txt CASE OUT.txt [RESET_AT_MS]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <simavr/avr_ioport.h>
#include <simavr/avr_spi.h>
#include <simavr/avr_uart.h>
#include <simavr/sim_avr.h>
#include <simavr/sim_irq.h>

#include "sim_dhcp.h"
#include "sim_uno.h"

#define HZ SIM_UNO_HZ
#define MAX_EDGES 8192

/* W5100 registers the model acts on (the datasheet's map, as firmware/arduino/w5100.c). */
#define MR 0x0000
#define SIPR 0x000F
#define RTR 0x0017
#define RCR 0x0019
#define SOCKETS 2
#define SN(s, r) (0x0400 + 0x100 * (s) + (r))
#define SN_MR 0x00
#define SN_CR 0x01
#define SN_IR 0x02
#define SN_SR 0x03
#define SN_DIPR 0x0C
#define SN_DPORT 0x10
#define SN_TX_FSR 0x20
#define SN_TX_RD 0x22
#define SN_TX_WR 0x24
#define SN_RX_RSR 0x26
#define SN_RX_RD 0x28
#define TX_BASE(s) (0x4000 + 0x800 * (s))
#define RX_BASE(s) (0x6000 + 0x800 * (s))
#define BUF_MASK 0x07FF
#define DHCP_SOCKET 1

static uint8_t mem[0x8000];
static uint8_t frame[4];
static int frame_len;
static avr_t *avr;
static avr_irq_t *spi_in, *pin_d2;
static FILE *out;
static long long offset_ms; /* case time = sim time + offset */
static long long edges[MAX_EDGES][2];
static int nedges, next_edge, packets;
static uint16_t rx_wr[SOCKETS]; /* the model's write pointers into the RX buffers */

static uint16_t get16(uint16_t a)
{
	return (uint16_t)(mem[a] << 8 | mem[a + 1]);
}

static void put16(uint16_t a, uint16_t v)
{
	mem[a] = (uint8_t)(v >> 8);
	mem[a + 1] = (uint8_t)v;
}

static void reset_chip(void)
{
	memset(mem, 0, sizeof(mem));
	memset(rx_wr, 0, sizeof(rx_wr));
	for (int s = 0; s < SOCKETS; s++)
		put16(SN(s, SN_TX_FSR), 0x0800);
	put16(RTR, 2000); /* the datasheet's reset values: 200 ms, 8 retries */
	mem[RCR] = 8;
}

static unsigned long long sim_us(void)
{
	return avr->cycle * 1000000ULL / HZ;
}

static long long case_ms(void)
{
	return (long long)(sim_us() / 1000) + offset_ms;
}

/* Puts a datagram into socket s's RX buffer as the chip does: source IP, port, length, data. */
static void receive(int s, const uint8_t ip[4], uint16_t port, const uint8_t *data, size_t len)
{
	uint8_t header[8] = {ip[0], ip[1], ip[2], ip[3], (uint8_t)(port >> 8), (uint8_t)port,
			     (uint8_t)(len >> 8), (uint8_t)len};

	for (size_t i = 0; i < 8 + len; i++)
		mem[RX_BASE(s) + ((rx_wr[s]++) & BUF_MASK)] = i < 8 ? header[i] : data[i - 8];
	put16(SN(s, SN_RX_RSR), (uint16_t)(rx_wr[s] - get16(SN(s, SN_RX_RD))));
}

/* Whether a host at ip answers the chip's ARP request. */
static int arp_answered(const uint8_t *ip)
{
	static const uint8_t broadcast[4] = {255, 255, 255, 255}, server[4] = {198, 18, 1, 1};

	return memcmp(ip, broadcast, 4) == 0 || memcmp(ip, server, 4) == 0;
}

/* The chip gave up on the ARP for socket s's destination: the datagram is dropped. */
static avr_cycle_count_t arp_timeout(avr_t *a, avr_cycle_count_t when, void *param)
{
	int s = (int)(intptr_t)param;
	const uint8_t *ip = &mem[SN(s, SN_DIPR)];

	(void)a;
	(void)when;
	put16(SN(s, SN_TX_RD), get16(SN(s, SN_TX_WR)));
	mem[SN(s, SN_IR)] |= 0x08; /* TIMEOUT */
	fprintf(out, "timeout %llu %lld %u.%u.%u.%u %u\n", sim_us(), case_ms(), ip[0], ip[1], ip[2],
		ip[3], get16(SN(s, SN_DPORT)));
	fflush(out);
	return 0;
}

static void send_datagram(int s)
{
	uint16_t rd = get16(SN(s, SN_TX_RD)), wr = get16(SN(s, SN_TX_WR)), len = (uint16_t)(wr - rd);
	uint8_t data[2048], reply[300];
	const char *what;
	size_t n;

	if (!arp_answered(&mem[SN(s, SN_DIPR)])) {
		/* RTR in units of 100 us, tried RCR + 1 times. */
		unsigned long long us = get16(RTR) * 100ULL * (mem[RCR] + 1U);

		avr_cycle_timer_register(avr, (avr_cycle_count_t)(us * (HZ / 1000000)), arp_timeout,
					 (void *)(intptr_t)s);
		return;
	}
	for (uint16_t i = 0; i < len; i++)
		data[i] = mem[TX_BASE(s) + ((rd + i) & BUF_MASK)];
	put16(SN(s, SN_TX_RD), wr);
	mem[SN(s, SN_IR)] |= 0x10; /* SEND_OK */
	if (s == DHCP_SOCKET) {
		static const uint8_t server[4] = {198, 18, 1, 1};

		n = sim_dhcp_reply(data, len, reply, &what);
		fprintf(out, "dhcp %llu %lld %s\n", sim_us(), case_ms(), what);
		if (n)
			receive(s, server, 67, reply, n);
		return;
	}
	fprintf(out, "packet %llu %lld %u.%u.%u.%u %u ", sim_us(), case_ms(), mem[SN(s, SN_DIPR)],
		mem[SN(s, SN_DIPR) + 1], mem[SN(s, SN_DIPR) + 2], mem[SN(s, SN_DIPR) + 3],
		get16(SN(s, SN_DPORT)));
	for (uint16_t i = 0; i < len; i++)
		fprintf(out, "%02x", data[i]);
	fputc('\n', out);
	fflush(out);
	packets++;
}

static void write_reg(uint16_t a, uint8_t v)
{
	int s = a >= 0x0400 && a < SN(SOCKETS, 0) ? (a - 0x0400) >> 8 : -1;
	uint16_t r = (uint16_t)(a & 0xFF);

	if (a == MR && (v & 0x80)) {
		reset_chip();
		return;
	}
	if (s >= 0 && r == SN_IR) {
		mem[a] &= (uint8_t)~v; /* write 1 to clear */
		return;
	}
	mem[a] = v;
	if (a == SIPR + 3) {
		fprintf(out, "address %llu %lld %u.%u.%u.%u\n", sim_us(), case_ms(), mem[SIPR],
			mem[SIPR + 1], mem[SIPR + 2], mem[SIPR + 3]);
		fflush(out);
	}
	if (s >= 0 && r == SN_CR) {
		if (v == 0x01 && (mem[SN(s, SN_MR)] & 0x0F) == 0x02)
			mem[SN(s, SN_SR)] = 0x22; /* SOCK_UDP */
		else if (v == 0x20)
			send_datagram(s);
		else if (v == 0x40) /* RECV: the firmware moved RX_RD on */
			put16(SN(s, SN_RX_RSR), (uint16_t)(rx_wr[s] - get16(SN(s, SN_RX_RD))));
		mem[SN(s, SN_CR)] = 0;
	}
	if (s >= 0 && r == SN_TX_WR + 1)
		put16(SN(s, SN_TX_FSR),
		      (uint16_t)(0x0800 - (uint16_t)(get16(SN(s, SN_TX_WR)) - get16(SN(s, SN_TX_RD)))));
}

/*
 * The SPI bus at the chip's own speed. simavr 1.6 (Debian 12) completes every byte 100 us
 * after SPDR is written, whatever the clock: 100 times the real 1 us at F_CPU/2, so each
 * W5100 register access took 400 us of simulated time and the firmware spent 85 % of its
 * simulated instructions polling SPIF. The model watches SPDR writes itself and answers
 * after 8 SCK periods (SPCR's SPR1:0 and SPSR's SPI2X, as the datasheet's table). simavr's
 * own timer still fires 100 us after the last byte and sets SPIF again; no transfer is in
 * flight then, and the next write clears it.
 */
#define SPCR_ADDR 0x4C /* ATmega328P data addresses (I/O 0x2C-0x2E) */
#define SPSR_ADDR 0x4D
#define SPDR_ADDR 0x4E
static uint8_t spi_out;

/* A byte shifted out by the AVR; the reply is what it reads back from SPDR. */
static avr_cycle_count_t spi_done(avr_t *a, avr_cycle_count_t when, void *param)
{
	uint8_t value = spi_out, reply = 0;
	uint16_t addr;

	(void)a;
	(void)when;
	(void)param;
	if (frame_len < 4)
		frame[frame_len++] = value;
	addr = (uint16_t)(frame[1] << 8 | frame[2]) & 0x7FFF;
	if (frame_len == 4) {
		if (frame[0] == 0xF0)
			write_reg(addr, frame[3]);
		else if (frame[0] == 0x0F)
			reply = mem[addr];
	}
	avr_raise_irq(spi_in, reply);
	return 0;
}

static void spi_write(avr_t *a, avr_io_addr_t addr, uint8_t v, void *param)
{
	static const avr_cycle_count_t divisor[4] = {4, 16, 64, 128};
	avr_cycle_count_t sck = divisor[a->data[SPCR_ADDR] & 3];

	(void)addr;
	(void)param;
	if (a->data[SPSR_ADDR] & 1)
		sck /= 2;
	spi_out = v;
	avr_cycle_timer_register(a, 8 * sck, spi_done, NULL);
}

static void chip_select(avr_irq_t *irq, uint32_t value, void *param)
{
	(void)irq;
	(void)param;
	if (!value)
		frame_len = 0;
}

static void uart_byte(avr_irq_t *irq, uint32_t value, void *param)
{
	(void)irq;
	(void)param;
	fputc((int)value, stderr);
}

/* Drives D2 through the case's edges, one cycle timer per edge. */
static avr_cycle_count_t next_level(avr_t *a, avr_cycle_count_t when, void *param)
{
	(void)a;
	(void)when;
	(void)param;
	avr_raise_irq(pin_d2, (uint32_t)edges[next_edge][1]);
	next_edge++;
	if (next_edge >= nedges)
		return 0;
	return (avr_cycle_count_t)((edges[next_edge][0] - offset_ms * 1000) * (long long)(HZ / 1000000));
}

static int edge_cmp(const void *a, const void *b)
{
	const long long *x = a, *y = b;

	return x[0] < y[0] ? -1 : x[0] > y[0];
}

int main(int argc, char **argv)
{
	char line[256], name[64];
	long long cal, dur = 0, s, w;
	int in_case = 0;
	FILE *f;
	avr_cycle_count_t end, reset_at = 0;

	if (argc != 5 && argc != 6) {
		fprintf(stderr, "usage: %s FIRMWARE.elf SIGNALS.txt CASE OUT.txt [RESET_AT_MS]\n",
			argv[0]);
		return 2;
	}
	f = fopen(argv[2], "r");
	if (!f) {
		perror(argv[2]);
		return 2;
	}
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "case name=%63s calibration_ms=%lld duration_ms=%lld", name, &cal,
			   &dur) == 3)
			in_case = strcmp(name, argv[3]) == 0;
		else if (in_case && sscanf(line, "pulse %lld %lld", &s, &w) == 2 && nedges + 2 <= MAX_EDGES) {
			edges[nedges][0] = s * 1000;
			edges[nedges++][1] = 1;
			edges[nedges][0] = (s + w) * 1000;
			edges[nedges++][1] = 0;
		} else if (in_case && strncmp(line, "end", 3) == 0) {
			break;
		}
	}
	fclose(f);
	if (!nedges) {
		fprintf(stderr, "no case %s in %s\n", argv[3], argv[2]);
		return 2;
	}
	qsort(edges, (size_t)nedges, sizeof(edges[0]), edge_cmp);
	/* The firmware boots for a second before the signal's first edge. */
	offset_ms = edges[0][0] / 1000 - 1000;

	avr = sim_uno_load(argv[1]);
	if (!avr)
		return 2;
	reset_chip();
	out = fopen(argv[4], "w");
	if (!out) {
		perror(argv[4]);
		return 2;
	}
	spi_in = avr_io_getirq(avr, AVR_IOCTL_SPI_GETIRQ(0), SPI_IRQ_INPUT);
	avr_register_io_write(avr, SPDR_ADDR, spi_write, NULL);
	avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_IOPORT_GETIRQ('B'), 2), chip_select,
				NULL);
	avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUTPUT),
				uart_byte, NULL);
	pin_d2 = avr_io_getirq(avr, AVR_IOCTL_IOPORT_GETIRQ('D'), 2);
	avr_raise_irq(pin_d2, 0);
	avr_cycle_timer_register(avr, (avr_cycle_count_t)((edges[0][0] - offset_ms * 1000) *
							 (long long)(HZ / 1000000)),
				 next_level, NULL);
	end = (avr_cycle_count_t)((dur - offset_ms) * (long long)(HZ / 1000));
	if (argc == 6) {
		reset_at = (avr_cycle_count_t)((atoll(argv[5]) - offset_ms) * (long long)(HZ / 1000));
		if (reset_at >= end) {
			fprintf(stderr, "RESET_AT_MS is past the case's end\n");
			return 2;
		}
	}
	while (avr->cycle < end) {
		if (reset_at && avr->cycle >= reset_at) {
			reset_at = 0;
			/* As the reset button: the chip and its pins start over, the EEPROM stays. */
			avr_reset(avr);
			avr_raise_irq(pin_d2, next_edge > 0 ? (uint32_t)edges[next_edge - 1][1] : 0);
			/* A reset drops the cycle timers: the signal goes on from its next edge. */
			if (next_edge < nedges)
				avr_cycle_timer_register(
					avr,
					(avr_cycle_count_t)((edges[next_edge][0] - offset_ms * 1000) *
							    (long long)(HZ / 1000000)) - avr->cycle,
					next_level, NULL);
			fprintf(out, "reset %llu %lld\n", sim_us(), case_ms());
			fflush(out);
		}
		int state = avr_run(avr);

		if (state == cpu_Done || state == cpu_Crashed) {
			fprintf(stderr, "the AVR stopped (state %d) at cycle %llu\n", state,
				(unsigned long long)avr->cycle);
			return 1;
		}
	}
	fclose(out);
	fprintf(stderr, "\nsim: %d datagrams in %.1f simulated seconds, %.1f %% of them asleep\n",
		packets, (double)avr->cycle / HZ, 100.0 * (double)sim_uno_asleep_cycles / (double)avr->cycle);
	return 0;
}
