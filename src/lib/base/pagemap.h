/* SPDX-License-Identifier: MIT */
/* The pages of a file that another process maps copy-on-write and has
 * written since it mapped it, and what backs memory that is only read
 * (pagemap.c). */
#ifndef QSNAP_BASE_PAGEMAP_H
#define QSNAP_BASE_PAGEMAP_H

#include <sys/types.h>

#include "base/base.h"

struct pagemap;
/* The mappings of file_fd's file in process pid (/proc/PID/maps, matched
 * by device and inode), and its pagemap. */
int pagemap_open(pid_t pid, int file_fd, struct pagemap **ret, qsnap_error *err);
void pagemap_close(struct pagemap *pm);
/* Has the process written the page at this offset of the file (its
 * mapping holds a private copy, or swapped it out)? Answers from entries
 * read since the last pagemap_forget: call that before asking about pages
 * whose state may have changed. An offset that cannot be checked counts
 * as written (pagemap_errors counts them). */
bool pagemap_written(struct pagemap *pm, uint64_t offset);
void pagemap_forget(struct pagemap *pm);
uint64_t pagemap_errors(const struct pagemap *pm);
/* Read len bytes of the mapping from the file's offset: what the process
 * sees there now, its own copies included (/proc/PID/mem, which needs the
 * right to trace it: pagemap_readable says whether we have it). */
int pagemap_read(struct pagemap *pm, uint64_t offset, void *buf, size_t len, qsnap_error *err);
bool pagemap_readable(pid_t pid);

/* Does reading untouched anonymous memory allocate it on this host? Most
 * kernels map a shared zero page for a read; some (kernels built to run
 * as a guest without one) allocate, so that a load that reads every page
 * of fresh guest RAM (QEMU checking a zero page) makes all of it
 * resident. */
bool pagemap_reads_allocate(void);

#endif
