/*
 * The transmitter's settings, compiled in. Edit, rebuild and flash (docs/firmware.md);
 * the key can also be set over the serial console (`key ID HEX`), kept in EEPROM.
 */
#ifndef NTP_OFFSET_CONFIG_H
#define NTP_OFFSET_CONFIG_H

/*
 * Ethernet: a locally administered MAC; the address from DHCP (1), or the static one below
 * (0). Ticks start once the address is known.
 */
#define CONFIG_MAC {0x02, 0x4e, 0x54, 0x4f, 0x00, 0x01}
#ifndef CONFIG_DHCP
#define CONFIG_DHCP 1
#endif
#define CONFIG_IP {198, 18, 1, 50}
#define CONFIG_SUBNET {255, 255, 255, 0}
#define CONFIG_GATEWAY {198, 18, 1, 1}
/*
 * Where ticks go, port 8123 (pulse listen's default). 255.255.255.255 (the local segment,
 * whatever DHCP hands out) needs no ARP. A unicast address works when that host answers ARP;
 * a subnet's directed broadcast (198.18.1.255) may make the W5100 ARP for it, which nobody
 * answers: every send then fails (counted, and reported on the serial console).
 */
#ifndef CONFIG_DESTINATION
#define CONFIG_DESTINATION {255, 255, 255, 255}
#endif
#define CONFIG_PORT 8123
/*
 * The tick socket's own port: not the tick port, so that other transmitters' ticks do not
 * arrive on it (a datagram arriving during a SEND hangs the W5100: erratum 1).
 */
#define CONFIG_SOURCE_PORT 8124
/* The DCF77 module's output: digital pin 2 (INT0); 1 if the module's output is active low. */
#define CONFIG_DCF77_PIN 2
#define CONFIG_DCF77_INVERTED 0
/* The module's demodulation delay in microseconds (calibrate against a known reference). */
#define CONFIG_CALIBRATION_US 0
/* Transmitter id, and the stratum announced (0: DCF77 is a primary reference). */
#define CONFIG_TRANSMITTER 0xdcf77001UL
/*
 * Key id and 32-byte key: the same line as in the receivers' key file (`pulse keygen`).
 * Key id 0 sends unauthenticated ticks. CHANGE THIS KEY: it is the test suite's.
 */
#define CONFIG_KEY_ID 1
#define CONFIG_KEY_HEX "101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f"

#endif
