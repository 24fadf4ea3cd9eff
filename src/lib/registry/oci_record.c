/* SPDX-License-Identifier: MIT */
/* registry.json in a VM directory: which local file holds which registry
 * blob (sha256), with the file's size, inode and mtime when that was
 * known, so that a file that has not changed since is not hashed or
 * downloaded again. Only a cache: a file that changed is hashed again. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "vmdir/vmdir.h"
#include "registry/oci.h"

#define RECORD "registry.json"

json_object *oci_record_load(int dirfd)
{
	_cleanup_free_ char *text = NULL;
	qsnap_error e;
	json_object *o = NULL;

	if (read_file(dirfd, RECORD, &text, NULL, &e) >= 0)
		o = json_tokener_parse(text);
	if (!o || !jobj(o, "files")) {
		json_object_put(o);
		o = jbuild("files", json_object_new_object(), NULL);
	}
	return o;
}

/* The file is unchanged since it was recorded with that digest. */
bool oci_record_match(json_object *rec, int dirfd, const char *path, const char *digest)
{
	json_object *f = jobj(jobj(rec, "files"), path);
	struct stat st;

	if (!f || !jstr(f, "digest") || strcmp(jstr(f, "digest"), digest) ||
	    fstatat(dirfd, path, &st, 0) < 0)
		return false;
	return jint(f, "size", -1) == (int64_t)st.st_size &&
	       jint(f, "ino", -1) == (int64_t)st.st_ino &&
	       jint(f, "mtime", -1) == (int64_t)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
}

void oci_record_set(json_object *rec, int dirfd, const char *path, const char *digest)
{
	struct stat st;

	if (fstatat(dirfd, path, &st, 0) < 0)
		return;
	json_object_object_add(
		jobj(rec, "files"), path,
		jbuild("digest", json_object_new_string(digest), "size",
		       json_object_new_int64((int64_t)st.st_size), "ino",
		       json_object_new_int64((int64_t)st.st_ino), "mtime",
		       json_object_new_int64((int64_t)st.st_mtim.tv_sec * 1000000000LL +
					     st.st_mtim.tv_nsec),
		       NULL));
}

int oci_record_save(json_object *rec, int dirfd, qsnap_error *err)
{
	const char *text = json_object_to_json_string_ext(rec, JSON_C_TO_STRING_PRETTY |
								       JSON_C_TO_STRING_NOSLASHESCAPE);

	return write_file_atomic(dirfd, RECORD, text, strlen(text), err);
}

/* A machine state or RAM file: the digest of each of its chunks (NULL: zero). */
void oci_record_set_chunks(json_object *rec, int dirfd, const char *path, uint64_t chunk_size,
			   const char *const *digests, size_t n)
{
	json_object *list = json_object_new_array(), *f;

	for (size_t i = 0; i < n; i++)
		json_object_array_add(list, digests[i] ? json_object_new_string(digests[i]) : NULL);
	oci_record_set(rec, dirfd, path, "");
	f = jobj(jobj(rec, "files"), path);
	if (!f) {
		json_object_put(list);
		return;
	}
	json_object_object_add(f, "chunk_size", json_object_new_int64((int64_t)chunk_size));
	json_object_object_add(f, "chunks", list);
}

/* An unchanged file of the VM that has a chunk with this digest. */
const char *oci_record_find_chunk(json_object *rec, int dirfd, const char *digest,
				     uint64_t *ret_off)
{
	json_object_object_foreach(jobj(rec, "files"), path, f)
	{
		json_object *list = jarr(f, "chunks");
		int64_t cs = jint(f, "chunk_size", 0);

		if (!list || cs <= 0 || !oci_record_match(rec, dirfd, path, ""))
			continue;
		for (size_t i = 0; i < json_object_array_length(list); i++) {
			json_object *e = json_object_array_get_idx(list, i);

			if (e && json_object_is_type(e, json_type_string) &&
			    !strcmp(json_object_get_string(e), digest)) {
				*ret_off = (uint64_t)cs * i;
				return path;
			}
		}
	}
	return NULL;
}


void oci_record_set_rebased(json_object *rec, int dirfd, const char *path, const char *digest)
{
	json_object *f;

	oci_record_set(rec, dirfd, path, digest);
	f = jobj(jobj(rec, "files"), path);
	if (f)
		json_object_object_add(f, "rebased", json_object_new_boolean(true));
}

/* The digest recorded for a file that has not changed since, or NULL. */
const char *oci_record_digest(json_object *rec, int dirfd, const char *path)
{
	json_object *f = jobj(jobj(rec, "files"), path);
	const char *d = jstr(f, "digest");

	/* A pulled layer holds its blob with another backing file in its
	 * header: that digest is not the file's. */
	if (jbool(f, "rebased", false))
		return NULL;
	return d && digest_valid(d) && oci_record_match(rec, dirfd, path, d) ? d : NULL;
}

/* The chunk digests recorded for an unchanged file ("" for a zero chunk),
 * when it was cut in chunks of chunk_size into n of them. */
bool oci_record_chunks(json_object *rec, int dirfd, const char *path, uint64_t chunk_size,
		       size_t n, char (*ret)[DIGEST_LEN + 1])
{
	json_object *f = jobj(jobj(rec, "files"), path), *list = jarr(f, "chunks");

	if (!list || jint(f, "chunk_size", 0) != (int64_t)chunk_size ||
	    json_object_array_length(list) != n || !oci_record_match(rec, dirfd, path, ""))
		return false;
	for (size_t i = 0; i < n; i++) {
		json_object *e = json_object_array_get_idx(list, i);

		if (e && (!json_object_is_type(e, json_type_string) ||
			  !digest_valid(json_object_get_string(e))))
			return false;
	}
	for (size_t i = 0; i < n; i++) {
		json_object *e = json_object_array_get_idx(list, i);

		snprintf(ret[i], DIGEST_LEN + 1, "%s", e ? json_object_get_string(e) : "");
	}
	return true;
}
