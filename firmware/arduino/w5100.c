/* W5100 over SPI: the register map is the W5100 datasheet's (version 1.2.x). */
#include "w5100.h"

#include <avr/io.h>

#define OP_WRITE 0xF0
#define OP_READ 0x0F

/* Common registers. */
#define MR 0x0000
#define GAR 0x0001
#define SUBR 0x0005
#define SHAR 0x0009
#define SIPR 0x000F
#define RTR 0x0017
#define RCR 0x0019
#define RMSR 0x001A
#define TMSR 0x001B
/* Socket s's registers: 0x0400 + 0x100 * s + these. */
#define SN(s, r) (0x0400 + 0x100 * (uint16_t)(s) + (r))
#define SN_MR 0x00
#define SN_CR 0x01
#define SN_IR 0x02
#define SN_SR 0x03
#define SN_PORT 0x04
#define SN_DIPR 0x0C
#define SN_DPORT 0x10
#define SN_TX_FSR 0x20
#define SN_TX_RD 0x22
#define SN_TX_WR 0x24
#define SN_RX_RSR 0x26
#define SN_RX_RD 0x28
/* Each socket's 2 KiB buffers. */
#define TX_BASE(s) (0x4000 + 0x800 * (uint16_t)(s))
#define RX_BASE(s) (0x6000 + 0x800 * (uint16_t)(s))
#define BUF_MASK 0x07FF

#define MR_RST 0x80
#define SN_MR_UDP 0x02
#define CR_OPEN 0x01
#define CR_CLOSE 0x10
#define CR_SEND 0x20
#define CR_RECV 0x40
#define IR_SEND_OK 0x10
#define IR_TIMEOUT 0x08
#define SR_UDP 0x22
/* A received UDP datagram's header in the RX buffer: source IP, port, data length. */
#define RX_HEADER 8

#define SOCKETS 2
/* Where the datagram being built or read continues, per socket. */
static uint16_t tx_at[SOCKETS], rx_at[SOCKETS], rx_end[SOCKETS];

static void select_chip(bool on)
{
	if (on)
		PORTB &= (uint8_t)~_BV(PB2);
	else
		PORTB |= _BV(PB2);
}

static uint8_t transfer(uint8_t b)
{
	SPDR = b;
	while (!(SPSR & _BV(SPIF)))
		;
	return SPDR;
}

static void write8(uint16_t addr, uint8_t v)
{
	select_chip(true);
	transfer(OP_WRITE);
	transfer((uint8_t)(addr >> 8));
	transfer((uint8_t)addr);
	transfer(v);
	select_chip(false);
}

static uint8_t read8(uint16_t addr)
{
	uint8_t v;

	select_chip(true);
	transfer(OP_READ);
	transfer((uint8_t)(addr >> 8));
	transfer((uint8_t)addr);
	v = transfer(0);
	select_chip(false);
	return v;
}

static void write_n(uint16_t addr, const uint8_t *p, uint16_t n)
{
	while (n--)
		write8(addr++, *p++);
}

static uint16_t read16(uint16_t addr)
{
	return (uint16_t)read8(addr) << 8 | read8(addr + 1);
}

static void write16(uint16_t addr, uint16_t v)
{
	write8(addr, (uint8_t)(v >> 8));
	write8(addr + 1, (uint8_t)v);
}

bool w5100_begin(const struct w5100_config *c)
{
	/* D10 (SS, chip select) and D4 (SD card select) outputs, high; SPI master, fosc/2. */
	DDRB |= _BV(PB2) | _BV(PB3) | _BV(PB5);
	DDRD |= _BV(PD4);
	PORTD |= _BV(PD4);
	select_chip(false);
	SPCR = _BV(SPE) | _BV(MSTR);
	SPSR = _BV(SPI2X);
	write8(MR, MR_RST);
	for (uint16_t i = 0; i < 1000 && (read8(MR) & MR_RST); i++)
		;
	write_n(SHAR, c->mac, 6);
	w5100_set_address(c->ip, c->subnet, c->gateway);
	/*
	 * An unanswered ARP gives up after RTR * (RCR + 1): 100 ms * 2 instead of the reset's
	 * 200 ms * 9, so a tick to an unreachable destination fails (and is counted) well
	 * before the next one is due.
	 */
	write16(RTR, 1000); /* units of 100 us */
	write8(RCR, 1);
	write8(RMSR, 0x55); /* 2 KiB per socket */
	write8(TMSR, 0x55);
	return read8(RMSR) == 0x55; /* the chip answers */
}

void w5100_set_address(const uint8_t ip[4], const uint8_t subnet[4], const uint8_t gateway[4])
{
	write_n(GAR, gateway, 4);
	write_n(SUBR, subnet, 4);
	write_n(SIPR, ip, 4);
}

bool w5100_open_udp(uint8_t s, uint16_t port)
{
	write8(SN(s, SN_MR), SN_MR_UDP);
	write16(SN(s, SN_PORT), port);
	write8(SN(s, SN_CR), CR_OPEN);
	for (uint16_t i = 0; i < 1000 && read8(SN(s, SN_CR)); i++)
		;
	return read8(SN(s, SN_SR)) == SR_UDP;
}

bool w5100_send_begin(uint8_t s, const uint8_t ip[4], uint16_t port, uint16_t len)
{
	if (read16(SN(s, SN_TX_FSR)) < len)
		return false;
	write_n(SN(s, SN_DIPR), ip, 4);
	write16(SN(s, SN_DPORT), port);
	tx_at[s] = read16(SN(s, SN_TX_WR));
	return true;
}

void w5100_send_append(uint8_t s, const uint8_t *data, uint16_t len)
{
	for (uint16_t i = 0; i < len; i++)
		write8(TX_BASE(s) + ((tx_at[s] + i) & BUF_MASK), data ? data[i] : 0);
	tx_at[s] += len;
}

void w5100_send_end(uint8_t s)
{
	write16(SN(s, SN_TX_WR), tx_at[s]);
	write8(SN(s, SN_CR), CR_SEND);
}

bool w5100_send(uint8_t s, const uint8_t ip[4], uint16_t port, const uint8_t *data, uint16_t len)
{
	if (!w5100_send_begin(s, ip, port, len))
		return false;
	w5100_send_append(s, data, len);
	w5100_send_end(s);
	return true;
}

enum w5100_send_status w5100_send_status(uint8_t s)
{
	uint8_t ir = read8(SN(s, SN_IR)) & (IR_SEND_OK | IR_TIMEOUT);

	if (ir) {
		write8(SN(s, SN_IR), ir);
		/* Both at once cannot happen for one SEND; a timeout is the news either way. */
		return ir & IR_TIMEOUT ? W5100_SEND_TIMEOUT : W5100_SENT;
	}
	return read16(SN(s, SN_TX_RD)) == read16(SN(s, SN_TX_WR)) ? W5100_IDLE : W5100_SENDING;
}

uint16_t w5100_drain(uint8_t s)
{
	uint16_t n = read16(SN(s, SN_RX_RSR));

	if (n) {
		write16(SN(s, SN_RX_RD), (uint16_t)(read16(SN(s, SN_RX_RD)) + n));
		write8(SN(s, SN_CR), CR_RECV);
	}
	return n;
}

bool w5100_reopen_udp(uint8_t s, uint16_t port)
{
	write8(SN(s, SN_CR), CR_CLOSE);
	for (uint16_t i = 0; i < 1000 && read8(SN(s, SN_CR)); i++)
		;
	return w5100_open_udp(s, port);
}

uint16_t w5100_recv_begin(uint8_t s)
{
	uint8_t header[RX_HEADER];
	uint16_t len;

	if (read16(SN(s, SN_RX_RSR)) < RX_HEADER)
		return 0;
	rx_at[s] = read16(SN(s, SN_RX_RD));
	rx_end[s] = rx_at[s] + RX_HEADER;
	w5100_recv_read(s, header, RX_HEADER);
	len = (uint16_t)header[6] << 8 | header[7];
	rx_end[s] += len;
	return len;
}

void w5100_recv_read(uint8_t s, uint8_t *buf, uint16_t len)
{
	for (uint16_t i = 0; i < len && rx_at[s] != rx_end[s]; i++) {
		uint8_t b = read8(RX_BASE(s) + (rx_at[s]++ & BUF_MASK));

		if (buf)
			buf[i] = b;
	}
}

void w5100_recv_end(uint8_t s)
{
	write16(SN(s, SN_RX_RD), rx_end[s]);
	write8(SN(s, SN_CR), CR_RECV);
}
