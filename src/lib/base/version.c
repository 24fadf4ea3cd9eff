/* SPDX-License-Identifier: MIT */
/* The library's version, and freeing what it handed out. */
#include <stdlib.h>

#include "base/base.h"

const char *qsnap_version(void)
{
	return QSNAP_LIB_VERSION;
}

void qsnap_free(void *p)
{
	free(p);
}
