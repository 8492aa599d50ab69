/*
 * Runs a firmware unit test built for the ATmega328P (avr_stdio.c) in simavr: its standard
 * input is this program's, its output goes to this program's standard output, and its exit
 * status becomes this program's. The point is the target's real integer widths: `int` has
 * 16 bits there, and arithmetic that is right on the host can overflow.
 *
 * Usage: sim_unit TEST.elf < INPUT
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim_uno.h"

#define HZ SIM_UNO_HZ
/* The register addresses in data space (ATmega328P datasheet, register summary). */
#define GPIOR0 0x3E
#define GPIOR1 0x4A
#define GPIOR2 0x4B
/* Ten simulated minutes: far more than any test needs, so a hung test ends. */
#define MAX_CYCLES (600ULL * HZ)

static int next_byte = -2; /* -2: not read yet; EOF (-1) at the end */
static int status = -1;

static void peek(void)
{
	if (next_byte == -2)
		next_byte = getchar();
}

static uint8_t read_more(avr_t *avr, avr_io_addr_t addr, void *param)
{
	(void)avr, (void)addr, (void)param;
	peek();
	return next_byte != EOF;
}

static uint8_t read_byte(avr_t *avr, avr_io_addr_t addr, void *param)
{
	int c;

	(void)avr, (void)addr, (void)param;
	peek();
	c = next_byte == EOF ? 0 : next_byte;
	next_byte = -2;
	return (uint8_t)c;
}

static void write_byte(avr_t *avr, avr_io_addr_t addr, uint8_t v, void *param)
{
	(void)avr, (void)addr, (void)param;
	putchar(v);
}

static void write_status(avr_t *avr, avr_io_addr_t addr, uint8_t v, void *param)
{
	(void)avr, (void)addr, (void)param;
	status = v;
}

int main(int argc, char **argv)
{
	avr_t *avr;

	if (argc != 2) {
		fprintf(stderr, "usage: %s TEST.elf < INPUT\n", argv[0]);
		return 2;
	}
	avr = sim_uno_load(argv[1]);
	if (!avr)
		return 2;
	avr_register_io_read(avr, GPIOR1, read_more, NULL);
	avr_register_io_read(avr, GPIOR2, read_byte, NULL);
	avr_register_io_write(avr, GPIOR2, write_byte, NULL);
	avr_register_io_write(avr, GPIOR0, write_status, NULL);
	while (status < 0) {
		int state = avr_run(avr);

		if (state == cpu_Done || state == cpu_Crashed) {
			fprintf(stderr, "sim_unit: the AVR stopped (state %d) before the test ended\n",
				state);
			return 2;
		}
		if (avr->cycle > MAX_CYCLES) {
			fprintf(stderr, "sim_unit: no result after %llu simulated seconds\n",
				MAX_CYCLES / HZ);
			return 2;
		}
	}
	fflush(stdout);
	fprintf(stderr, "sim_unit: %s: exit %d after %.1f simulated seconds\n", argv[1], status,
		(double)avr->cycle / HZ);
	return status;
}
