/* SPDX-License-Identifier: MIT */
/* The structs a caller hands in or gets filled carry their own size (their
 * first field, set to sizeof by the caller or a QSNAP_*_INIT macro), as
 * Linux's clone3 and openat2 take theirs: the library reads only what the
 * caller's size covers and takes the rest as zero, and writes only that
 * much back. A caller built against an older qsnap.h (smaller struct) gets
 * the defaults of the fields it does not know; one built against a newer
 * qsnap.h gets its unknown fields refused unless they are zero, and zeroed
 * when the library fills the struct. */
#include <errno.h>
#include <string.h>

#include "base/base.h"

int sized_in(void *dst, size_t dst_size, const void *src, const char *what, qsnap_error *err)
{
	size_t size;

	memset(dst, 0, dst_size);
	*(size_t *)dst = dst_size;
	if (!src)
		return 0;
	memcpy(&size, src, sizeof(size));
	if (size < sizeof(size_t))
		return qerr(err, EINVAL, "%s.size is %zu: set it to sizeof(%s), as the QSNAP_*_INIT macros do",
			    what, size, what);
	if (size > dst_size) {
		/* Fields this library does not know: fine only while unset. */
		for (const unsigned char *p = (const unsigned char *)src + dst_size,
					 *end = (const unsigned char *)src + size;
		     p < end; p++)
			if (*p)
				return qerr(err, E2BIG, "%s has fields this libqsnap (%s) does not know set, %zu bytes where it knows %zu",
					    what, qsnap_version(), size, dst_size);
		size = dst_size;
	}
	memcpy((char *)dst + sizeof(size_t), (const char *)src + sizeof(size_t), size - sizeof(size_t));
	*(size_t *)dst = dst_size;
	return 0;
}

int sized_check(const void *p, const char *what, qsnap_error *err)
{
	size_t size;

	if (!p)
		return 0;
	memcpy(&size, p, sizeof(size));
	if (size < sizeof(size_t))
		return qerr(err, EINVAL, "%s.size is %zu: set it to sizeof(%s), as the QSNAP_*_INIT macros do",
			    what, size, what);
	return 0;
}

void sized_out(void *dst, const void *src, size_t src_size)
{
	size_t size;

	if (!dst)
		return;
	memcpy(&size, dst, sizeof(size));
	if (size < sizeof(size_t))
		return;
	memcpy((char *)dst + sizeof(size_t), (const char *)src + sizeof(size_t),
	       (size < src_size ? size : src_size) - sizeof(size_t));
	if (size > src_size)
		memset((char *)dst + src_size, 0, size - src_size);
}
