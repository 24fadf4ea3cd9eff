/* SPDX-License-Identifier: MIT */
/* A few transfers at a time: jobs run on a few threads, each with its own
 * connection, the caller's thread ticking the progress meanwhile; the first
 * failure stops the jobs not yet started. */
#include <errno.h>
#include <time.h>

#include "vmdir/vmdir.h"
#include "registry/http.h"

struct pool {
	struct registry *r;
	size_t n, next, running;
	reg_job fn;
	void *ud;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool failed;
	qsnap_error err;
};

static void *worker(void *arg)
{
	struct pool *pl = arg;
	reg_conn *c = reg_conn_new();

	for (;;) {
		qsnap_error e = {0};
		size_t i;
		int r;

		pthread_mutex_lock(&pl->lock);
		if (pl->failed || pl->next >= pl->n) {
			pthread_mutex_unlock(&pl->lock);
			break;
		}
		i = pl->next++;
		pthread_mutex_unlock(&pl->lock);
		r = pl->fn(pl->r, c, i, pl->ud, &e);
		if (r < 0) {
			pthread_mutex_lock(&pl->lock);
			if (!pl->failed) {
				pl->failed = true;
				pl->err = e;
				if (!pl->err.code)
					pl->err.code = -r;
			}
			pthread_mutex_unlock(&pl->lock);
		}
	}
	reg_conn_free(c);
	pthread_mutex_lock(&pl->lock);
	pl->running--;
	pthread_cond_signal(&pl->cond);
	pthread_mutex_unlock(&pl->lock);
	return NULL;
}

int reg_parallel(struct registry *r, size_t n, unsigned threads, reg_job fn, void *ud,
		 void (*tick)(void *ud), qsnap_error *err)
{
	struct pool pl = {.r = r, .n = n, .fn = fn, .ud = ud};
	pthread_t *tids;
	size_t started = 0;

	if (!n)
		return 0;
	if (threads > n)
		threads = (unsigned)n;
	pthread_mutex_init(&pl.lock, NULL);
	pthread_cond_init(&pl.cond, NULL);
	tids = xcalloc(threads, sizeof(*tids));
	pthread_mutex_lock(&pl.lock);
	for (unsigned i = 0; i < threads; i++) {
		if (pthread_create(&tids[i], NULL, worker, &pl) != 0)
			break;
		started++;
		pl.running++;
	}
	while (pl.running > 0) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 200 * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&pl.cond, &pl.lock, &ts);
		if (tick) {
			pthread_mutex_unlock(&pl.lock);
			tick(ud);
			pthread_mutex_lock(&pl.lock);
		}
	}
	pthread_mutex_unlock(&pl.lock);
	for (size_t i = 0; i < started; i++)
		pthread_join(tids[i], NULL);
	free(tids);
	pthread_mutex_destroy(&pl.lock);
	pthread_cond_destroy(&pl.cond);
	if (!started)
		return qerr(err, EAGAIN, "cannot start a transfer thread");
	if (pl.failed) {
		*err = pl.err;
		return -pl.err.code;
	}
	return 0;
}
