// SPDX-License-Identifier: GPL-2.0
/*
 * signal_lines: test-only input lines that play recorded signals: two lines of a GPIO chip
 * (with interrupts) and the DCD line of a serial port, /dev/ttySIG0.
 *
 * Debian's kernels build neither gpio-sim nor gpio-mockup, and a pty has no modem lines, so
 * `pulse send --source dcf77` had nothing to read in a test. Each line plays a schedule of
 * level changes from an hrtimer: the GPIO character device stamps the edges in the kernel,
 * and the serial core wakes TIOCMIWAIT, as they would for a DCF77 module on a real pin.
 *
 * /sys/kernel/signal_lines/schedule  append "LINE AT_MS LEVEL" triples (AT_MS rising per
 *                                    line; lines 0-1: GPIO, line 2: DCD of ttySIG0)
 * /sys/kernel/signal_lines/start     write 1: every line plays its schedule from now
 * /sys/kernel/signal_lines/start_ns  CLOCK_REALTIME of AT_MS 0 (read)
 * /sys/kernel/signal_lines/played    level changes played so far, per line (read)
 * /sys/kernel/signal_lines/late_ns   the latest a change was played, per line (read): the
 *                                    player's own error, apart from the readers'
 *
 * Test code only: kernel/test/run loads it in the test VM, nothing installs it.
 */

#include <linux/gpio/driver.h>
#include <linux/hrtimer.h>
#include <linux/irq.h>
#include <linux/kobject.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/serial_core.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/sysfs.h>

#define GPIO_LINES 2
#define DCD_LINE GPIO_LINES
#define LINES (GPIO_LINES + 1)
#define MAX_CHANGES 2048

struct change {
	u32 at_ms;
	u8 level;
};

struct line {
	struct change *changes;
	unsigned int count;
	unsigned int next;	/* next change to play; written by the timer only */
	int level;
	s64 late_ns;	/* the worst lateness of the timer so far */
	struct hrtimer timer;
};

static struct line lines[LINES];
static struct gpio_chip chip;
static struct uart_port port;
static struct kobject *kobj;
static DEFINE_MUTEX(schedule_lock);	/* schedule writes and start */
static ktime_t start_mono;
static s64 start_real_ns;
static bool started;

static enum hrtimer_restart play(struct hrtimer *timer)
{
	struct line *l = container_of(timer, struct line, timer);
	unsigned int offset = l - lines;
	s64 late = ktime_to_ns(ktime_sub(ktime_get(), hrtimer_get_expires(timer)));

	if (late > l->late_ns)
		WRITE_ONCE(l->late_ns, late);
	WRITE_ONCE(l->level, l->changes[l->next].level);
	WRITE_ONCE(l->next, l->next + 1);
	if (offset == DCD_LINE) {
		unsigned long flags;

		/* What a UART's modem status interrupt does (serial8250_modem_status). */
		spin_lock_irqsave(&port.lock, flags);
		uart_handle_dcd_change(&port, l->level);
		spin_unlock_irqrestore(&port.lock, flags);
		wake_up_interruptible(&port.state->port.delta_msr_wait);
	} else {
		/* Every change raises the interrupt; gpiolib-cdev reads the level for the edge. */
		generic_handle_domain_irq_safe(chip.irq.domain, offset);
	}
	if (l->next >= l->count)
		return HRTIMER_NORESTART;
	hrtimer_set_expires(timer, ktime_add_ms(start_mono, l->changes[l->next].at_ms));
	return HRTIMER_RESTART;
}

static int line_get(struct gpio_chip *gc, unsigned int offset)
{
	return READ_ONCE(lines[offset].level);
}

static int line_get_direction(struct gpio_chip *gc, unsigned int offset)
{
	return GPIO_LINE_DIRECTION_IN;
}

static int line_direction_input(struct gpio_chip *gc, unsigned int offset)
{
	return 0;
}

static void line_irq_mask(struct irq_data *d)
{
	gpiochip_disable_irq(irq_data_get_irq_chip_data(d), irqd_to_hwirq(d));
}

static void line_irq_unmask(struct irq_data *d)
{
	gpiochip_enable_irq(irq_data_get_irq_chip_data(d), irqd_to_hwirq(d));
}

static int line_irq_set_type(struct irq_data *d, unsigned int type)
{
	return (type & IRQ_TYPE_EDGE_BOTH) && !(type & IRQ_TYPE_LEVEL_MASK) ? 0 : -EINVAL;
}

static const struct irq_chip line_irq_chip = {
	.name = "signal_lines",
	.irq_mask = line_irq_mask,
	.irq_unmask = line_irq_unmask,
	.irq_set_type = line_irq_set_type,
	.flags = IRQCHIP_IMMUTABLE,
	GPIOCHIP_IRQ_RESOURCE_HELPERS,
};

/* A UART that never sends or receives a byte: only DCD matters. */
static unsigned int port_tx_empty(struct uart_port *p)
{
	return TIOCSER_TEMT;
}

static unsigned int port_get_mctrl(struct uart_port *p)
{
	return TIOCM_DSR | TIOCM_CTS | (READ_ONCE(lines[DCD_LINE].level) ? TIOCM_CAR : 0);
}

static void port_start_tx(struct uart_port *p)
{
	uart_circ_clear(&p->state->xmit);	/* written bytes vanish */
}

static int port_startup(struct uart_port *p)
{
	return 0;
}

static void port_set_termios(struct uart_port *p, struct ktermios *new,
			     const struct ktermios *old)
{
	uart_update_timeout(p, new->c_cflag, uart_get_baud_rate(p, new, old, 50, 115200));
}

static const char *port_type(struct uart_port *p)
{
	return "signal_lines";
}

static int port_request(struct uart_port *p)
{
	return 0;
}

static int port_verify(struct uart_port *p, struct serial_struct *ser)
{
	return -EINVAL;
}

static void port_nothing(struct uart_port *p)
{
}

static void port_set_mctrl(struct uart_port *p, unsigned int mctrl)
{
}

static void port_break_ctl(struct uart_port *p, int ctl)
{
}

static void port_config(struct uart_port *p, int flags)
{
}

static const struct uart_ops port_ops = {
	.tx_empty = port_tx_empty,
	.set_mctrl = port_set_mctrl,
	.get_mctrl = port_get_mctrl,
	.stop_tx = port_nothing,
	.start_tx = port_start_tx,
	.stop_rx = port_nothing,
	.enable_ms = port_nothing,
	.break_ctl = port_break_ctl,
	.startup = port_startup,
	.shutdown = port_nothing,
	.set_termios = port_set_termios,
	.type = port_type,
	.release_port = port_nothing,
	.request_port = port_request,
	.config_port = port_config,
	.verify_port = port_verify,
};

static struct uart_driver port_driver = {
	.owner = THIS_MODULE,
	.driver_name = "signal_lines",
	.dev_name = "ttySIG",
	.nr = 1,
};

static ssize_t schedule_store(struct kobject *k, struct kobj_attribute *a,
			      const char *buf, size_t len)
{
	char *copy, *cursor, *tok;
	unsigned int v[3], n = 0;
	ssize_t ret = len;

	copy = kstrndup(buf, len, GFP_KERNEL);
	if (!copy)
		return -ENOMEM;
	mutex_lock(&schedule_lock);
	if (started) {
		ret = -EBUSY;
		goto out;
	}
	cursor = copy;
	while ((tok = strsep(&cursor, " \t\n"))) {
		struct line *l;

		if (!*tok)
			continue;
		if (kstrtouint(tok, 10, &v[n])) {
			ret = -EINVAL;
			goto out;
		}
		if (++n < 3)
			continue;
		n = 0;
		if (v[0] >= LINES || v[2] > 1) {
			ret = -EINVAL;
			goto out;
		}
		l = &lines[v[0]];
		if (l->count == MAX_CHANGES ||
		    (l->count && v[1] < l->changes[l->count - 1].at_ms)) {
			ret = -EINVAL;
			goto out;
		}
		l->changes[l->count].at_ms = v[1];
		l->changes[l->count].level = v[2];
		l->count++;
	}
	if (n)
		ret = -EINVAL;	/* a partial triple */
out:
	mutex_unlock(&schedule_lock);
	kfree(copy);
	return ret;
}

static ssize_t start_store(struct kobject *k, struct kobj_attribute *a,
			   const char *buf, size_t len)
{
	int i;

	mutex_lock(&schedule_lock);
	if (started) {
		mutex_unlock(&schedule_lock);
		return -EBUSY;
	}
	started = true;
	start_mono = ktime_get();
	start_real_ns = ktime_get_real_ns();
	for (i = 0; i < LINES; i++)
		if (lines[i].count)
			hrtimer_start(&lines[i].timer,
				      ktime_add_ms(start_mono, lines[i].changes[0].at_ms),
				      HRTIMER_MODE_ABS);
	mutex_unlock(&schedule_lock);
	return len;
}

static ssize_t start_ns_show(struct kobject *k, struct kobj_attribute *a, char *buf)
{
	return sysfs_emit(buf, "%lld\n", start_real_ns);
}

static ssize_t played_show(struct kobject *k, struct kobj_attribute *a, char *buf)
{
	return sysfs_emit(buf, "%u %u %u\n", READ_ONCE(lines[0].next), READ_ONCE(lines[1].next),
			  READ_ONCE(lines[2].next));
}

static ssize_t late_ns_show(struct kobject *k, struct kobj_attribute *a, char *buf)
{
	return sysfs_emit(buf, "%lld %lld %lld\n", READ_ONCE(lines[0].late_ns),
			  READ_ONCE(lines[1].late_ns), READ_ONCE(lines[2].late_ns));
}

static struct kobj_attribute schedule_attr = __ATTR_WO(schedule);
static struct kobj_attribute start_attr = __ATTR_WO(start);
static struct kobj_attribute start_ns_attr = __ATTR_RO(start_ns);
static struct kobj_attribute played_attr = __ATTR_RO(played);
static struct kobj_attribute late_ns_attr = __ATTR_RO(late_ns);

static struct attribute *attrs[] = {
	&schedule_attr.attr,
	&start_attr.attr,
	&start_ns_attr.attr,
	&played_attr.attr,
	&late_ns_attr.attr,
	NULL,
};

static const struct attribute_group group = { .attrs = attrs };

static void free_lines(void)
{
	int i;

	for (i = 0; i < LINES; i++) {
		hrtimer_cancel(&lines[i].timer);
		kfree(lines[i].changes);
	}
}

static int __init signal_lines_init(void)
{
	struct gpio_irq_chip *girq = &chip.irq;
	int i, ret;

	for (i = 0; i < LINES; i++) {
		hrtimer_init(&lines[i].timer, CLOCK_MONOTONIC, HRTIMER_MODE_ABS);
		lines[i].timer.function = play;
	}
	for (i = 0; i < LINES; i++) {
		lines[i].changes = kcalloc(MAX_CHANGES, sizeof(struct change), GFP_KERNEL);
		if (!lines[i].changes) {
			ret = -ENOMEM;
			goto err_lines;
		}
	}
	chip.label = "signal_lines";
	chip.owner = THIS_MODULE;
	chip.base = -1;
	chip.ngpio = GPIO_LINES;
	chip.get = line_get;
	chip.get_direction = line_get_direction;
	chip.direction_input = line_direction_input;
	gpio_irq_chip_set_chip(girq, &line_irq_chip);
	girq->handler = handle_simple_irq;
	girq->default_type = IRQ_TYPE_NONE;
	ret = gpiochip_add_data(&chip, NULL);
	if (ret)
		goto err_lines;
	ret = uart_register_driver(&port_driver);
	if (ret)
		goto err_chip;
	port.ops = &port_ops;
	port.type = PORT_16550A;	/* anything but PORT_UNKNOWN, which cannot be opened */
	port.flags = UPF_FIXED_TYPE;
	port.uartclk = 1843200;
	ret = uart_add_one_port(&port_driver, &port);
	if (ret)
		goto err_driver;
	ret = -ENOMEM;
	kobj = kobject_create_and_add("signal_lines", kernel_kobj);
	if (!kobj)
		goto err_port;
	ret = sysfs_create_group(kobj, &group);
	if (ret)
		goto err_kobj;
	return 0;

err_kobj:
	kobject_put(kobj);
err_port:
	uart_remove_one_port(&port_driver, &port);
err_driver:
	uart_unregister_driver(&port_driver);
err_chip:
	gpiochip_remove(&chip);
err_lines:
	free_lines();
	return ret;
}

static void __exit signal_lines_exit(void)
{
	kobject_put(kobj);
	free_lines();	/* timers stop before the chip, its irq domain and the port go */
	uart_remove_one_port(&port_driver, &port);
	uart_unregister_driver(&port_driver);
	gpiochip_remove(&chip);
}

module_init(signal_lines_init);
module_exit(signal_lines_exit);
MODULE_DESCRIPTION("Test input lines (GPIO, serial DCD) that play recorded signals");
MODULE_LICENSE("GPL");
