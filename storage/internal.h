/* Internal helpers shared by the files of storage/. */
#ifndef QPOOL_STORAGE_INTERNAL_H
#define QPOOL_STORAGE_INTERNAL_H

#include "qpool.h"

/* The volume's pool exists, has a driver and is online. */
int qp_vol_ready(struct qp_volume *v, struct qp_err *err);
/* The VM is not started. */
int qp_dom_halted(const struct qp_domain *d, struct qp_err *err);

#endif
