/* SPDX-License-Identifier: MIT */
/* A synchronous QMP client: one connection, commands keyed by id, events
 * kept in arrival order for callers that wait for them. */
#ifndef QSNAP_QMP_H
#define QSNAP_QMP_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "qsnap.h"

struct qmp;

/* Default time one command may take. */
#define QMP_TIMEOUT_MS 30000

/* The client knows only a connected socket (qemu_connect makes one): it
 * reads the greeting and negotiates capabilities; takes the fd in all
 * cases. */
int qmp_open_fd_take(int fd, int timeout_ms, struct qmp **ret, qsnap_error *err);
void qmp_free(struct qmp *q);

/* Execute a command. args (may be NULL) is taken. On success ret_return (if
 * non-NULL) gets the "return" value (json_object_put() it). A QMP error
 * reply becomes an error naming the command. */
int qmp_execute(struct qmp *q, const char *cmd, json_object *args, json_object **ret_return,
		int timeout_ms, qsnap_error *err);
/* The same, passing fd with SCM_RIGHTS along with the command (for getfd). */
int qmp_execute_fd(struct qmp *q, const char *cmd, json_object *args, int fd,
		   json_object **ret_return, int timeout_ms, qsnap_error *err);

/* Wait for the next event called name (NULL: any) that arrived on this
 * connection and was not taken yet. -ETIMEDOUT when none came in time. */
int qmp_wait_event(struct qmp *q, const char *name, json_object **ret_event, int timeout_ms,
		   qsnap_error *err);
/* Drop every queued event called name (NULL: all). */
void qmp_drop_events(struct qmp *q, const char *name);
/* Execute a command whose effect ends in events: the queued ones of those
 * names (NULL-terminated) are dropped first, so that qmp_wait_event sees
 * only what came after this command. */
int qmp_execute_expect(struct qmp *q, const char *cmd, json_object *args,
		       const char *const events[], json_object **ret_return, int timeout_ms,
		       qsnap_error *err);

/* What ends every wait on a connection besides its own timeout: the
 * cancellation cancel_fd (-1: none; -ECANCELED) and a limit (a now_ms()
 * time, 0: none; -ETIMEDOUT). qmp_bound sets them and returns the ones
 * before. */
struct qmp_bounds {
	int cancel_fd;
	int64_t limit;
};
struct qmp_bounds qmp_bound(struct qmp *q, struct qmp_bounds b);
/* The last command got no reply in time (QEMU stopped, or wedged). */
bool qmp_stalled(struct qmp *q);

/* What the QEMU on a connection can do, learnt once per connection
 * (caps.c): qsnap picks its paths from this, never from the version alone
 * (caps_tcg_dirty_log_sound has the one exception and why). */
struct qemu_caps {
	bool known;
	int major, minor, micro;
	char version[32];	   /* "10.0.2" */
	bool kvm;		   /* the guest runs under KVM (query-kvm) */
	json_object *mig_caps;	   /* migration capabilities: name -> true */
	json_object *mig_params;   /* migration parameters: name -> true */
	json_object *commands;	   /* QMP commands: name -> true */
	bool direct_io;		   /* the next migration uses direct-io (migrate_setup) */
};
/* The connection's capabilities (all false until caps_learn). */
struct qemu_caps *qmp_caps(struct qmp *q);

#endif
