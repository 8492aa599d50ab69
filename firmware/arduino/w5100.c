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
#define RMSR 0x001A
#define TMSR 0x001B
/* Socket 0 registers. */
#define S0_MR 0x0400
#define S0_CR 0x0401
#define S0_IR 0x0402
#define S0_SR 0x0403
#define S0_PORT 0x0404
#define S0_DIPR 0x040C
#define S0_DPORT 0x0410
#define S0_TX_FSR 0x0420
#define S0_TX_WR 0x0424
/* Socket 0's 2 KiB transmit buffer. */
#define TX_BASE 0x4000
#define TX_MASK 0x07FF

#define MR_RST 0x80
#define SN_MR_UDP 0x02
#define CR_OPEN 0x01
#define CR_SEND 0x20
#define IR_SEND_OK 0x10
#define IR_TIMEOUT 0x08
#define SR_UDP 0x22

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

bool w5100_begin(const struct w5100_config *c, uint16_t port)
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
	write_n(GAR, c->gateway, 4);
	write_n(SUBR, c->subnet, 4);
	write_n(SHAR, c->mac, 6);
	write_n(SIPR, c->ip, 4);
	write8(RMSR, 0x55); /* 2 KiB per socket */
	write8(TMSR, 0x55);
	write8(S0_MR, SN_MR_UDP);
	write16(S0_PORT, port);
	write8(S0_CR, CR_OPEN);
	for (uint16_t i = 0; i < 1000 && read8(S0_CR); i++)
		;
	return read8(S0_SR) == SR_UDP;
}

bool w5100_send(const uint8_t ip[4], uint16_t port, const uint8_t *data, uint16_t len)
{
	uint16_t wr;

	if (read16(S0_TX_FSR) < len)
		return false;
	write_n(S0_DIPR, ip, 4);
	write16(S0_DPORT, port);
	wr = read16(S0_TX_WR);
	for (uint16_t i = 0; i < len; i++)
		write8(TX_BASE + ((wr + i) & TX_MASK), data[i]);
	write16(S0_TX_WR, wr + len);
	write8(S0_CR, CR_SEND);
	return true;
}

bool w5100_send_done(void)
{
	uint8_t ir = read8(S0_IR);

	if (!(ir & (IR_SEND_OK | IR_TIMEOUT)))
		return false;
	write8(S0_IR, ir & (IR_SEND_OK | IR_TIMEOUT));
	return true;
}
