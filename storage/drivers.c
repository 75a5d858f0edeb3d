/* The table of pool drivers, found by name. */
#include "qpool.h"

#include <string.h>

extern const struct qp_driver qp_driver_reflink;
extern const struct qp_driver qp_driver_lvmthin;
extern const struct qp_driver qp_driver_kernel;

const struct qp_driver *const qp_drivers[] = {
	&qp_driver_reflink,
	&qp_driver_lvmthin,
	&qp_driver_kernel,
	NULL,
};

const struct qp_driver *qp_driver_find(const char *name)
{
	for (size_t i = 0; qp_drivers[i]; i++)
		if (name && !strcmp(qp_drivers[i]->name, name))
			return qp_drivers[i];
	return NULL;
}
