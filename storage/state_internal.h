/* Internal interface between the parts of qpool state: objects.c (objects,
 * lookups), state_xml.c (the qubes.xml format) and state.c (the file). */
#ifndef QPOOL_STORAGE_STATE_INTERNAL_H
#define QPOOL_STORAGE_STATE_INTERNAL_H

#include "qpool.h"

#include <stddef.h>

#define STATE_FILE "qubes.xml"
#define STATE_MAX_BYTES (256u << 20)

/* An empty state (no root, not locked); NULL when out of memory. */
struct qp_state *qp_state_alloc(void);

/* Appends label @id; 0 or -ENOMEM. */
int qp_state_add_label(struct qp_state *st, int id, const char *color, const char *name);

/* A pool kept with drv NULL because its driver is unknown; *out owned. */
int qp_pool_new_unknown(struct qp_state *st, const char *name, const char *driver,
			const struct qp_kvlist *config, struct qp_pool **out, struct qp_err *err);

/* The driver name of @p, also for a pool of an unknown driver. */
const char *qp_pool_driver_name(const struct qp_pool *p);

/* Parses the qubes.xml document @buf into an empty @st and links it; 0 or a
 * negative errno with the detail in @err. */
int qp_state_parse_into(struct qp_state *st, const char *buf, size_t len, struct qp_err *err);

#endif
