/*
 * End-to-end run of the transmitter firmware in simavr: an ATmega328P at 16 MHz executes
 * target/firmware/arduino.elf, a DCF77 signal case (testvectors/dcf77-signals.txt) drives
 * pin D2, and a model of the W5100 on the SPI bus records every UDP datagram the firmware
 * sends. Output, one line per datagram:
 *   packet SIM_US CASE_MS DEST_IP DEST_PORT HEX
 * where CASE_MS is the send time on the case's clock. The Rust test
 * (crates/ntp-offset/tests/firmware.rs) checks them with the project's tick decoder.
 *
 * Usage: sim_w5100 FIRMWARE.elf SIGNALS.txt CASE OUT.txt
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <simavr/avr_ioport.h>
#include <simavr/avr_spi.h>
#include <simavr/avr_uart.h>
#include <simavr/sim_avr.h>
#include <simavr/sim_elf.h>
#include <simavr/sim_irq.h>

#define HZ 16000000ULL
#define MAX_EDGES 8192

/* W5100 registers the model acts on (the datasheet's map, as firmware/arduino/w5100.c). */
#define MR 0x0000
#define S0_CR 0x0401
#define S0_IR 0x0402
#define S0_SR 0x0403
#define S0_DIPR 0x040C
#define S0_DPORT 0x0410
#define S0_TX_FSR 0x0420
#define S0_TX_RD 0x0422
#define S0_TX_WR 0x0424
#define TX_BASE 0x4000
#define TX_MASK 0x07FF

static uint8_t mem[0x8000];
static uint8_t frame[4];
static int frame_len;
static avr_t *avr;
static avr_irq_t *spi_in, *pin_d2;
static FILE *out;
static long long offset_ms; /* case time = sim time + offset */
static long long edges[MAX_EDGES][2];
static int nedges, next_edge, packets;

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
	put16(S0_TX_FSR, 0x0800);
}

static void send_datagram(void)
{
	uint16_t rd = get16(S0_TX_RD), wr = get16(S0_TX_WR), len = (uint16_t)(wr - rd);
	unsigned long long us = avr->cycle * 1000000ULL / HZ;

	fprintf(out, "packet %llu %lld %u.%u.%u.%u %u ", us, (long long)(us / 1000) + offset_ms,
		mem[S0_DIPR], mem[S0_DIPR + 1], mem[S0_DIPR + 2], mem[S0_DIPR + 3], get16(S0_DPORT));
	for (uint16_t i = 0; i < len; i++)
		fprintf(out, "%02x", mem[TX_BASE + ((rd + i) & TX_MASK)]);
	fputc('\n', out);
	fflush(out);
	packets++;
	put16(S0_TX_RD, wr);
	mem[S0_IR] |= 0x10; /* SEND_OK */
}

static void write_reg(uint16_t a, uint8_t v)
{
	if (a == MR && (v & 0x80)) {
		reset_chip();
		return;
	}
	if (a == S0_IR) {
		mem[a] &= (uint8_t)~v; /* write 1 to clear */
		return;
	}
	mem[a] = v;
	if (a == S0_CR) {
		if (v == 0x01 && (mem[0x0400] & 0x0F) == 0x02)
			mem[S0_SR] = 0x22; /* SOCK_UDP */
		else if (v == 0x20)
			send_datagram();
		mem[S0_CR] = 0;
	}
	if (a == S0_TX_WR + 1)
		put16(S0_TX_FSR, (uint16_t)(0x0800 - (uint16_t)(get16(S0_TX_WR) - get16(S0_TX_RD))));
}

/* A byte shifted out by the AVR; the reply is what it reads back from SPDR. */
static void spi_byte(avr_irq_t *irq, uint32_t value, void *param)
{
	uint8_t reply = 0;
	uint16_t addr;

	(void)irq;
	(void)param;
	if (frame_len < 4)
		frame[frame_len++] = (uint8_t)value;
	addr = (uint16_t)(frame[1] << 8 | frame[2]) & 0x7FFF;
	if (frame_len == 4) {
		if (frame[0] == 0xF0)
			write_reg(addr, frame[3]);
		else if (frame[0] == 0x0F)
			reply = mem[addr];
	}
	avr_raise_irq(spi_in, reply);
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
	elf_firmware_t fw;
	char line[256], name[64];
	long long cal, dur = 0, s, w;
	int in_case = 0;
	FILE *f;
	avr_cycle_count_t end;

	if (argc != 5) {
		fprintf(stderr, "usage: %s FIRMWARE.elf SIGNALS.txt CASE OUT.txt\n", argv[0]);
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

	memset(&fw, 0, sizeof(fw));
	if (elf_read_firmware(argv[1], &fw) != 0) {
		fprintf(stderr, "cannot read %s\n", argv[1]);
		return 2;
	}
	strcpy(fw.mmcu, "atmega328p");
	fw.frequency = HZ;
	avr = avr_make_mcu_by_name(fw.mmcu);
	if (!avr)
		return 2;
	avr_init(avr);
	avr_load_firmware(avr, &fw);
	reset_chip();
	out = fopen(argv[4], "w");
	if (!out) {
		perror(argv[4]);
		return 2;
	}
	spi_in = avr_io_getirq(avr, AVR_IOCTL_SPI_GETIRQ(0), SPI_IRQ_INPUT);
	avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_SPI_GETIRQ(0), SPI_IRQ_OUTPUT),
				spi_byte, NULL);
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
	while (avr->cycle < end) {
		int state = avr_run(avr);

		if (state == cpu_Done || state == cpu_Crashed) {
			fprintf(stderr, "the AVR stopped (state %d) at cycle %llu\n", state,
				(unsigned long long)avr->cycle);
			return 1;
		}
	}
	fclose(out);
	fprintf(stderr, "\nsim: %d datagrams in %.1f simulated seconds\n", packets,
		(double)avr->cycle / HZ);
	return 0;
}
