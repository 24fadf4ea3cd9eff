/* SPDX-License-Identifier: MIT */
/* Handing QEMU the file a migration writes or reads: a seekable file in an
 * fd set (file:/dev/fdset/N) where QEMU has that, anything else by getfd
 * (fd:NAME), over the QMP socket with SCM_RIGHTS; and letting go of it. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>

#include "qemu/qemu.h"

int migrate_pass_fd(struct qmp *q, const char *name, int fd, qsnap_error *err)
{
	return qmp_execute_fd(q, "getfd", jbuild("fdname", json_object_new_string(name), NULL), fd,
			      NULL, 0, err);
}

int migrate_pass(struct qmp *q, const char *name, int fd, bool file, struct mig_target *t,
		 qsnap_error *err)
{
	_cleanup_json_ json_object *ret = NULL;
	int r;

	*t = (struct mig_target){.fdset = -1};
	if (!file || !caps_file_uri(q)) {
		r = migrate_pass_fd(q, name, fd, err);
		if (r < 0)
			return r;
		snprintf(t->name, sizeof(t->name), "%s", name);
		snprintf(t->uri, sizeof(t->uri), "fd:%s", name);
		return 0;
	}
	/* QEMU dups an fd of the set whose access mode (and O_DIRECT, 9.1+)
	 * matches the open it does for the URI: O_WRONLY to save, O_RDONLY to
	 * load (QEMU 10.0). */
	r = qmp_execute_fd(q, "add-fd", jbuild("opaque", json_object_new_string(name), NULL), fd,
			   &ret, 0, err);
	if (r < 0)
		return r;
	t->fdset = jint(ret, "fdset-id", -1);
	if (t->fdset < 0)
		return qerr(err, EPROTO, "QEMU's add-fd gave no fdset-id");
	if (qmp_caps(q)->direct_io) {
		/* direct-io opens the file with O_DIRECT, and QEMU dups only an
		 * fd of the set with that flag (10.0.2 segfaults without one). */
		_cleanup_free_ char *self = xasprintf("/proc/self/fd/%d", fd);
		_cleanup_close_ int dfd = open(self, (fcntl(fd, F_GETFL) & O_ACCMODE) | O_DIRECT |
							  O_CLOEXEC);

		if (dfd < 0)
			r = qerr(err, errno, "direct-io: cannot open the machine state with O_DIRECT: %s",
				 strerror(errno));
		else
			r = qmp_execute_fd(q, "add-fd",
					   jbuild("fdset-id", json_object_new_int64(t->fdset), "opaque",
						  json_object_new_string(name), NULL),
					   dfd, NULL, 0, err);
		if (r < 0) {
			migrate_release(q, t);
			return r;
		}
	}
	snprintf(t->uri, sizeof(t->uri), "file:/dev/fdset/%lld", (long long)t->fdset);
	return 0;
}

void migrate_release(struct qmp *q, struct mig_target *t)
{
	qsnap_error e2;

	if (t->fdset >= 0)
		qmp_execute(q, "remove-fd", jbuild("fdset-id", json_object_new_int64(t->fdset), NULL),
			    NULL, 0, &e2);
	else if (t->name[0])
		qmp_execute(q, "closefd", jbuild("fdname", json_object_new_string(t->name), NULL),
			    NULL, 0, &e2);
	*t = (struct mig_target){.fdset = -1};
}

void migrate_release_name(struct qmp *q, const char *name)
{
	_cleanup_json_ json_object *sets = NULL;
	qsnap_error e2;

	qmp_execute(q, "closefd", jbuild("fdname", json_object_new_string(name), NULL), NULL, 0,
		    &e2);
	if (!caps_command(q, "query-fdsets") ||
	    qmp_execute(q, "query-fdsets", NULL, &sets, 0, &e2) < 0)
		return;
	for (size_t i = 0; json_object_is_type(sets, json_type_array) &&
			   i < json_object_array_length(sets);
	     i++) {
		json_object *set = json_object_array_get_idx(sets, i), *fds = jarr(set, "fds");
		bool ours = false;

		for (size_t j = 0; fds && j < json_object_array_length(fds); j++) {
			const char *opaque = jstr(json_object_array_get_idx(fds, j), "opaque");

			ours |= opaque && !strcmp(opaque, name);
		}
		if (ours)
			qmp_execute(q, "remove-fd",
				    jbuild("fdset-id", json_object_new_int64(jint(set, "fdset-id", -1)),
					   NULL),
				    NULL, 0, &e2);
	}
}
