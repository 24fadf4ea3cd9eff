/* SPDX-License-Identifier: MIT */
/* Internal interfaces of the OCI registry client (registry*.c) and the
 * snapshot artifact (oci*.c). */
#ifndef QSNAP_REGISTRY_H
#define QSNAP_REGISTRY_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "vmdir/vmdir.h"

/* ---- references (registry_ref.c) ---- */

struct reg_ref {
	char *host; /* host[:port], as given */
	char *repo; /* path components, lowercase, [a-z0-9._-/] */
	char *tag;    /* what the manifest's URL names: the tag, or the digest */
	char *digest; /* a reference by digest: "sha256:<hex>", else NULL */
};
/* host[:port]/repository[:tag] (default_tag when there is none) or
 * host[:port]/repository@sha256:<hex>. */
int reg_ref_parse(const char *s, const char *default_tag, struct reg_ref *ret, qsnap_error *err);
void reg_ref_free(struct reg_ref *r);
bool reg_tag_valid(const char *tag);

/* ---- credentials and challenges (registry_auth.c) ---- */

struct reg_creds {
	char *user, *password;
	const char *source; /* for messages: where they came from */
};
/* QSNAP_REGISTRY_USER/QSNAP_REGISTRY_PASSWORD, else the Docker config
 * ($DOCKER_CONFIG/config.json or ~/.docker/config.json) entry for host.
 * None found is not an error (ret stays empty). */
int reg_creds_find(const char *host, struct reg_creds *ret, qsnap_error *err);
/* The same from a config.json text (for tests). */
int reg_creds_from_docker_config(const char *text, const char *what, const char *host,
				 struct reg_creds *ret, qsnap_error *err);
void reg_creds_free(struct reg_creds *c);

struct reg_challenge {
	char *scheme; /* "basic" or "bearer", lowercase */
	char *realm, *service, *scope;
};
/* A WWW-Authenticate header's value. */
int reg_challenge_parse(const char *header, struct reg_challenge *ret);
void reg_challenge_free(struct reg_challenge *c);
/* base64 (RFC 4648) of len bytes; and back (NULL when not base64). */
char *base64_encode(const void *data, size_t len);
char *base64_decode(const char *s, size_t *ret_len);

/* ---- the client (registry.c; its HTTP in registry_http.c, tokens in
 * registry_token.c, what they share in http.h) ---- */

struct registry {
	struct reg_ref ref;
	char *base;	/* "https://host[:port]" */
	bool push;	/* the access asked for: pull, or pull and push */
	struct reg_creds creds;
	pthread_mutex_t lock;
	char *auth;	/* the Authorization header's value in use, NULL: anonymous */
	unsigned gen;	/* counts changes of auth */
};

/* One connection per thread: a curl easy handle. */
typedef void reg_conn;

int registry_open(const char *ref, const char *default_tag, bool insecure, bool push,
		  struct registry **ret, qsnap_error *err);
void registry_close(struct registry *r);
/* A new connection (registry_http.c). */
reg_conn *reg_conn_new(void);
void reg_conn_free(reg_conn *c);

/* ---- blobs (registry_blob.c, registry_upload.c) ---- */

/* Does the repository hold this blob? */
int reg_blob_exists(struct registry *r, reg_conn *c, const char *digest, bool *ret,
		    qsnap_error *err);
/* Upload len bytes of fd from off as blob digest: in pieces (PATCH),
 * resuming after a dropped connection. on_bytes counts what went out. */
int reg_blob_upload_fd(struct registry *r, reg_conn *c, int fd, uint64_t off, uint64_t len,
		       const char *digest, void (*on_bytes)(uint64_t n, void *ud), void *ud,
		       qsnap_error *err);
int reg_blob_upload_mem(struct registry *r, reg_conn *c, const void *data, size_t len,
			const char *digest, qsnap_error *err);
/* Download a blob of size bytes, checking its sha256 as it comes; sink
 * gets each piece (and fails the download by returning < 0 with err set). */
typedef int (*reg_sink)(const void *data, size_t len, void *ud, qsnap_error *err);
int reg_blob_get(struct registry *r, reg_conn *c, const char *digest, uint64_t size,
		 reg_sink sink, void *ud, qsnap_error *err);
/* A small blob into memory (at most max bytes), checked. */
int reg_blob_get_mem(struct registry *r, reg_conn *c, const char *digest, uint64_t size,
		     char **ret, qsnap_error *err);

/* ---- manifests (registry_manifest.c) ---- */

int reg_manifest_put(struct registry *r, reg_conn *c, const char *media_type, const char *json,
		     qsnap_error *err);
/* The manifest of the reference's tag, and its digest. */
int reg_manifest_get(struct registry *r, reg_conn *c, const char *accept, char **ret_json,
		     char ret_digest[DIGEST_LEN + 1], qsnap_error *err);

/* ---- a few transfers at a time (registry_parallel.c) ---- */

/* Run fn(i) for i in [0, n) on a few threads, each with its own connection;
 * tick is called on this thread about 5 times a second. The first failure
 * stops the jobs not yet started and is returned. */
typedef int (*reg_job)(struct registry *r, reg_conn *c, size_t i, void *ud, qsnap_error *err);
int reg_parallel(struct registry *r, size_t n, unsigned threads, reg_job fn, void *ud,
		 void (*tick)(void *ud), qsnap_error *err);

/* ---- the snapshot artifact (oci.c) ---- */

#define OCI_MANIFEST_TYPE "application/vnd.oci.image.manifest.v1+json"
#define QSNAP_ARTIFACT_TYPE "application/vnd.qsnap.snapshot.v1"
#define QSNAP_CONFIG_TYPE "application/vnd.qsnap.snapshot.config.v1+json"
#define QSNAP_DISK_QCOW2_TYPE "application/vnd.qsnap.disk.qcow2"
#define QSNAP_DISK_RAW_TYPE "application/vnd.qsnap.disk.raw"
#define QSNAP_KERNEL_TYPE "application/vnd.qsnap.boot.kernel"
#define QSNAP_INITRD_TYPE "application/vnd.qsnap.boot.initrd"
#define QSNAP_VMSTATE_TYPE "application/vnd.qsnap.vmstate.chunk"
#define QSNAP_RAM_TYPE "application/vnd.qsnap.ram.chunk"
#define QSNAP_CONFIG_FORMAT "qsnap-snapshot"
#define QSNAP_CONFIG_VERSION 1
/* A differential snapshot's config (its "deltas", meta.json's ram_base):
 * a qsnap that reads only version 1 refuses it rather than making a
 * plain shared-RAM snapshot of it. */
#define QSNAP_CONFIG_VERSION_DIFF 2
/* Machine state and shared RAM travel in chunks of this size, so that
 * snapshots of one VM share the chunks that did not change. */
#define OCI_CHUNK_SIZE (32ULL << 20)
/* The config, a manifest: qsnap's own are a few KiB (a config lists 55000
 * chunks in 4 MiB); a larger one is refused before it is read whole. */
#define OCI_MAX_SMALL_BLOB (4 << 20)

#endif
