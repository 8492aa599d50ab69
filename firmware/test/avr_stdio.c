/*
 * Runs a firmware unit test on the ATmega328P in simavr (sim_unit.c): standard input and
 * output go through three otherwise unused I/O registers that the harness watches, and the
 * test's exit status is written to a fourth. The test's own main() is renamed test_main by
 * the Makefile, so the same source runs on the host and here.
 *   GPIOR1 read: 1 while input remains   GPIOR2 read: the next input byte
 *   GPIOR2 write: an output byte          GPIOR0 write: the exit status; the run ends
 */
#include <avr/interrupt.h>
#include <avr/io.h>
#include <avr/sleep.h>
#include <stdio.h>

int test_main(void);

static int put(char c, FILE *f)
{
	(void)f;
	GPIOR2 = (uint8_t)c;
	return 0;
}

static int get(FILE *f)
{
	(void)f;
	return GPIOR1 ? GPIOR2 : _FDEV_EOF;
}

static FILE io = FDEV_SETUP_STREAM(put, get, _FDEV_SETUP_RW);

int main(void)
{
	stdin = stdout = stderr = &io;
	GPIOR0 = (uint8_t)test_main();
	cli();
	for (;;)
		sleep_cpu();
}
