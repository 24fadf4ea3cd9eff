/* SPDX-License-Identifier: MIT */
/* The VM directory's names that are made of parts (layout.h). */
#include <string.h>

#include "vmdir/vmdir.h"

char *layout_layer(const char *drive, unsigned long seq)
{
	return xasprintf(VMDIR_LAYERS "/%s-%lu.qcow2", drive, seq);
}

const char *layout_in_layers(const char *layer)
{
	size_t n = strlen(VMDIR_LAYERS "/");

	return strncmp(layer, VMDIR_LAYERS "/", n) ? layer : layer + n;
}

char *layout_snapshot(const char *name)
{
	return xasprintf(VMDIR_SNAPSHOTS "/%s", name);
}

char *layout_partial(unsigned long seq)
{
	return xasprintf(VMDIR_SNAPSHOTS "/.partial-%lu", seq);
}

char *layout_image(const char *drive, const char *format)
{
	return xasprintf(VMDIR_IMAGES "/%s.%s", drive, format);
}

char *layout_in(const char *dir, const char *file)
{
	return xasprintf("%s/%s", dir, file);
}
