/* An Arduino Uno in simavr: an ATmega328P at 16 MHz running a firmware ELF. */
#ifndef NTP_OFFSET_SIM_UNO_H
#define NTP_OFFSET_SIM_UNO_H

#include <simavr/sim_avr.h>

#define SIM_UNO_HZ 16000000ULL

/* The AVR with `elf` loaded, ready to run; NULL (said on stderr) if it cannot be. */
avr_t *sim_uno_load(const char *elf);

/* Cycles the AVR has spent asleep (simavr skips them). */
extern avr_cycle_count_t sim_uno_asleep_cycles;

#endif
