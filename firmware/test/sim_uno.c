/* An Arduino Uno in simavr (sim_uno.h), for the firmware's simulated runs. */
#include "sim_uno.h"

#include <stdio.h>
#include <string.h>

#include <simavr/sim_elf.h>

/*
 * simavr's default sleep callback waits in real time for the cycles a sleeping AVR skips; a
 * test wants them skipped at once (the firmware sleeps between interrupts).
 */
avr_cycle_count_t sim_uno_asleep_cycles;

static void skip_sleep(avr_t *avr, avr_cycle_count_t cycles)
{
	(void)avr;
	sim_uno_asleep_cycles += cycles;
}

avr_t *sim_uno_load(const char *elf)
{
	elf_firmware_t fw;
	avr_t *avr;

	memset(&fw, 0, sizeof(fw));
	if (elf_read_firmware(elf, &fw) != 0) {
		fprintf(stderr, "cannot read %s\n", elf);
		return NULL;
	}
	strcpy(fw.mmcu, "atmega328p");
	fw.frequency = SIM_UNO_HZ;
	avr = avr_make_mcu_by_name(fw.mmcu);
	if (!avr) {
		fprintf(stderr, "simavr has no atmega328p\n");
		return NULL;
	}
	avr_init(avr);
	avr_load_firmware(avr, &fw);
	avr->sleep = skip_sleep;
	return avr;
}
