// SPDX-License-Identifier: GPL-2.0
/*
 * signal_gpio: a test-only GPIO chip whose input lines play recorded signals.
 *
 * Debian's kernels build neither gpio-sim nor gpio-mockup, so `pulse send --source dcf77`
 * had no line to read in a test. This chip has LINES input lines with interrupts; each
 * plays a schedule of level changes from an hrtimer, so the GPIO character device stamps
 * the edges in the kernel, as it would for a DCF77 module on a real pin.
 *
 * /sys/kernel/signal_gpio/schedule  append "LINE AT_MS LEVEL" triples (AT_MS rising per line)
 * /sys/kernel/signal_gpio/start     write 1: every line plays its schedule from now
 * /sys/kernel/signal_gpio/start_ns  CLOCK_REALTIME of AT_MS 0 (read)
 * /sys/kernel/signal_gpio/played    level changes played so far, per line (read)
 *
 * Test code only: kernel/test/run loads it in the test VM, nothing installs it.
 */

#include <linux/gpio/driver.h>
#include <linux/hrtimer.h>
#include <linux/irq.h>
#include <linux/kobject.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/sysfs.h>

#define LINES 2
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
	struct hrtimer timer;
};

static struct line lines[LINES];
static struct gpio_chip chip;
static struct kobject *kobj;
static DEFINE_MUTEX(schedule_lock);	/* schedule writes and start */
static ktime_t start_mono;
static s64 start_real_ns;
static bool started;

static enum hrtimer_restart play(struct hrtimer *timer)
{
	struct line *l = container_of(timer, struct line, timer);
	unsigned int offset = l - lines;

	WRITE_ONCE(l->level, l->changes[l->next].level);
	WRITE_ONCE(l->next, l->next + 1);
	/* Every change raises the interrupt; gpiolib-cdev reads the level to tell the edge. */
	generic_handle_domain_irq_safe(chip.irq.domain, offset);
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
	.name = "signal_gpio",
	.irq_mask = line_irq_mask,
	.irq_unmask = line_irq_unmask,
	.irq_set_type = line_irq_set_type,
	.flags = IRQCHIP_IMMUTABLE,
	GPIOCHIP_IRQ_RESOURCE_HELPERS,
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
	return sysfs_emit(buf, "%u %u\n", READ_ONCE(lines[0].next), READ_ONCE(lines[1].next));
}

static struct kobj_attribute schedule_attr = __ATTR_WO(schedule);
static struct kobj_attribute start_attr = __ATTR_WO(start);
static struct kobj_attribute start_ns_attr = __ATTR_RO(start_ns);
static struct kobj_attribute played_attr = __ATTR_RO(played);

static struct attribute *attrs[] = {
	&schedule_attr.attr,
	&start_attr.attr,
	&start_ns_attr.attr,
	&played_attr.attr,
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

static int __init signal_gpio_init(void)
{
	struct gpio_irq_chip *girq = &chip.irq;
	int i, ret;

	for (i = 0; i < LINES; i++) {
		hrtimer_init(&lines[i].timer, CLOCK_MONOTONIC, HRTIMER_MODE_ABS);
		lines[i].timer.function = play;
		lines[i].changes = kcalloc(MAX_CHANGES, sizeof(struct change), GFP_KERNEL);
		if (!lines[i].changes) {
			free_lines();
			return -ENOMEM;
		}
	}
	chip.label = "signal_gpio";
	chip.owner = THIS_MODULE;
	chip.base = -1;
	chip.ngpio = LINES;
	chip.get = line_get;
	chip.get_direction = line_get_direction;
	chip.direction_input = line_direction_input;
	gpio_irq_chip_set_chip(girq, &line_irq_chip);
	girq->handler = handle_simple_irq;
	girq->default_type = IRQ_TYPE_NONE;
	ret = gpiochip_add_data(&chip, NULL);
	if (ret) {
		free_lines();
		return ret;
	}
	kobj = kobject_create_and_add("signal_gpio", kernel_kobj);
	if (!kobj || sysfs_create_group(kobj, &group)) {
		kobject_put(kobj);
		gpiochip_remove(&chip);
		free_lines();
		return -ENOMEM;
	}
	return 0;
}

static void __exit signal_gpio_exit(void)
{
	kobject_put(kobj);
	free_lines();	/* timers stop before the chip and its irq domain go */
	gpiochip_remove(&chip);
}

module_init(signal_gpio_init);
module_exit(signal_gpio_exit);
MODULE_DESCRIPTION("Test GPIO chip whose input lines play recorded signals");
MODULE_LICENSE("GPL");
