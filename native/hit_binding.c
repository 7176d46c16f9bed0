/*
 * The JavaScript side of the native hit path (hit.h; src/native/hits.ts is its user). JavaScript
 * publishes what its cache served as a plain fresh hit and grants it to a source's exact target;
 * the thread answers those requests until the grant's deadline, and reports every answer.
 *
 *   hitPublish(handle, status, pre, post, body, freshUntilMs, ageOriginMs)
 *                        an object: the head as written up to "age: " (pre) and after the value
 *                        (post), the body (null for none); fresh until freshUntilMs (wall clock);
 *                        Age is floor((now - ageOriginMs) / 1000). Replaces the same handle's.
 *   hitGrant(door, address, target, handle, expiresMs)
 *                        requests from `address` on listener `door` for exactly `target` are
 *                        answered with the object until expiresMs (wall clock)
 *   hitDrop(handle)      the object (and its grants) no longer holds
 *   hitRevoke(door)      forget the listener's grants (0: every listener's)
 *   hitStats()           { served, handedOff, connections, objects, bytes }
 *
 * Records come through the door's onEvent (door_binding.c): 2 handoff (stage 0 or 3), 7 hits,
 * 8 http-end.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "door.h"
#include "hit.h"

typedef enum { H_PUBLISH, H_GRANT, H_DROP, H_REVOKE } hit_verdict_kind;

typedef struct hit_verdict {
  hit_verdict_kind what;
  uint32_t handle, door;
  hit_object *obj;
  uint8_t key[16];
  char *target;
  size_t ntarget;
  int64_t expires;
} hit_verdict;

static void hit_apply(void *arg) {
  hit_verdict *v = arg;
  switch (v->what) {
    case H_PUBLISH: hit_table_publish(v->obj); break;
    case H_GRANT: hit_table_grant(v->door, v->key, v->target, v->ntarget, v->handle, v->expires); break;
    case H_DROP: hit_table_drop(v->handle); break;
    case H_REVOKE: hit_table_revoke(v->door); break;
  }
  free(v->target);
  free(v);
}

static napi_value post(napi_env env, hit_verdict *v) {
  if (!loop_running()) {
    free(v->target);
    free(v);
    return loop_throw(env, "ENATIVE", "hit path: spliceInit was not called");
  }
  if (loop_run(hit_apply, v) != 0) {
    free(v->target);
    free(v);
    return loop_throw(env, "ENOMEM", "hit path: out of memory");
  }
  return NULL;
}

static int args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  return napi_get_cb_info(env, info, &argc, argv, NULL, NULL) == napi_ok && argc >= want;
}

/* A copy of a Buffer's bytes (NULL for null/undefined: *n = 0); -1 when it is not a Buffer. */
static int copy_buffer(napi_env env, napi_value value, uint8_t **out, size_t *n) {
  napi_valuetype t;
  *out = NULL;
  *n = 0;
  if (napi_typeof(env, value, &t) != napi_ok) return -1;
  if (t == napi_null || t == napi_undefined) return 0;
  void *data;
  size_t len;
  if (napi_get_buffer_info(env, value, &data, &len) != napi_ok) return -1;
  if (len == 0) return 0;
  *out = malloc(len);
  if (!*out) return -1;
  memcpy(*out, data, len);
  *n = len;
  return 0;
}

static napi_value hit_publish(napi_env env, napi_callback_info info) {
  napi_value argv[7];
  uint32_t handle;
  int32_t status;
  double fresh, origin;
  if (!args(env, info, 7, argv) || napi_get_value_uint32(env, argv[0], &handle) != napi_ok || napi_get_value_int32(env, argv[1], &status) != napi_ok ||
      napi_get_value_double(env, argv[5], &fresh) != napi_ok || napi_get_value_double(env, argv[6], &origin) != napi_ok)
    return loop_throw(env, "EINVAL", "hitPublish: expected (handle, status, pre, post, body, freshUntilMs, ageOriginMs)");
  hit_object *obj = calloc(1, sizeof *obj);
  hit_verdict *v = calloc(1, sizeof *v);
  if (!obj || !v || copy_buffer(env, argv[2], &obj->pre, &obj->npre) < 0 || copy_buffer(env, argv[3], &obj->post, &obj->npost) < 0 ||
      copy_buffer(env, argv[4], &obj->body, &obj->nbody) < 0 || !obj->pre || !obj->post) {
    if (obj) {
      free(obj->pre);
      free(obj->post);
      free(obj->body);
    }
    free(obj);
    free(v);
    return loop_throw(env, "EINVAL", "hitPublish: pre and post must be Buffers, body a Buffer or null");
  }
  obj->body_fd = -1;
  if (obj->nbody >= HIT_SENDFILE_MIN && __sync_add_and_fetch(&hit_memfds, 1) <= HIT_MEMFD_MAX) {
    /* A large body in a memfd: the thread sends it with sendfile(2), the kernel referencing its
     * pages instead of copying the bytes from user memory for every response. */
    int fd = memfd_create("sockstap-hit", MFD_CLOEXEC);
    size_t off = 0;
    while (fd >= 0 && off < obj->nbody) {
      ssize_t n = write(fd, obj->body + off, obj->nbody - off);
      if (n <= 0) {
        close(fd);
        fd = -1;
      } else
        off += (size_t)n;
    }
    if (fd >= 0) {
      obj->body_fd = fd;
      free(obj->body);
      obj->body = NULL;
    } else
      __sync_fetch_and_sub(&hit_memfds, 1); /* sent from memory with writev after all */
  } else if (obj->nbody >= HIT_SENDFILE_MIN)
    __sync_fetch_and_sub(&hit_memfds, 1);
  obj->handle = handle;
  obj->status = status;
  obj->fresh_until = (int64_t)fresh;
  obj->age_origin = origin;
  v->what = H_PUBLISH;
  v->obj = obj;
  return post(env, v);
}

static napi_value hit_grant(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  uint32_t door, handle;
  double expires;
  char text[INET6_ADDRSTRLEN + 8];
  size_t n;
  if (!args(env, info, 5, argv) || napi_get_value_uint32(env, argv[0], &door) != napi_ok ||
      napi_get_value_string_utf8(env, argv[1], text, sizeof text, &n) != napi_ok || napi_get_value_uint32(env, argv[3], &handle) != napi_ok ||
      napi_get_value_double(env, argv[4], &expires) != napi_ok)
    return loop_throw(env, "EINVAL", "hitGrant: expected (door, address, target, handle, expiresMs)");
  hit_verdict *v = calloc(1, sizeof *v);
  if (!v) return loop_throw(env, "ENOMEM", "hitGrant: out of memory");
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  if (inet_pton(AF_INET, text, &((struct sockaddr_in *)&ss)->sin_addr) == 1) ss.ss_family = AF_INET;
  else if (inet_pton(AF_INET6, text, &((struct sockaddr_in6 *)&ss)->sin6_addr) == 1) ss.ss_family = AF_INET6;
  else {
    free(v);
    return loop_throw(env, "EINVAL", "hitGrant: not an IP address");
  }
  memo_address_key(&ss, v->key);
  size_t len;
  if (napi_get_value_string_latin1(env, argv[2], NULL, 0, &len) != napi_ok || len == 0 || len > HIT_BUF ||
      !(v->target = malloc(len + 1)) || napi_get_value_string_latin1(env, argv[2], v->target, len + 1, &len) != napi_ok) {
    free(v->target);
    free(v);
    return loop_throw(env, "EINVAL", "hitGrant: the target must be a string");
  }
  v->what = H_GRANT;
  v->door = door;
  v->ntarget = len;
  v->handle = handle;
  v->expires = (int64_t)expires;
  return post(env, v);
}

static napi_value hit_id_call(napi_env env, napi_callback_info info, hit_verdict_kind what, const char *usage) {
  napi_value argv[1];
  uint32_t id;
  if (!args(env, info, 1, argv) || napi_get_value_uint32(env, argv[0], &id) != napi_ok) return loop_throw(env, "EINVAL", usage);
  hit_verdict *v = calloc(1, sizeof *v);
  if (!v) return loop_throw(env, "ENOMEM", "hit path: out of memory");
  v->what = what;
  v->handle = v->door = id;
  return post(env, v);
}

static napi_value hit_drop(napi_env env, napi_callback_info info) {
  return hit_id_call(env, info, H_DROP, "hitDrop: expected a handle");
}

static napi_value hit_revoke(napi_env env, napi_callback_info info) {
  return hit_id_call(env, info, H_REVOKE, "hitRevoke: expected a listener id (0: all)");
}

static napi_value hit_stats(napi_env env, napi_callback_info info) {
  static const char *const names[] = { "served", "handedOff", "connections", "objects", "bytes" };
  double values[5];
  hit_figures(values);
  return loop_figures(env, names, values, 5);
}

static void free_bytes(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  free(data);
}

/* onEvent's arguments (door_binding.c): kind, id, door, host, port, peer, peerPort, fd, stage, bytes, reason, counts, acceptedMs. */
void hit_deliver(napi_env env, napi_value loop_cb, js_record *rec) {
  (void)loop_cb;
  hit_record *r = (hit_record *)rec;
  napi_value cb;
  if (!door_callback(env, &cb)) {
    if (r->fd >= 0) close(r->fd);
    free(r->bytes);
    free(r);
    return;
  }
  napi_value argv[13], none;
  napi_get_null(env, &none);
  napi_create_int32(env, r->kind, &argv[0]);
  napi_create_uint32(env, r->id, &argv[1]);
  napi_create_uint32(env, r->door, &argv[2]);
  argv[3] = none;
  napi_create_int32(env, 0, &argv[4]);
  napi_create_string_utf8(env, r->peer, NAPI_AUTO_LENGTH, &argv[5]);
  napi_create_int32(env, r->peer_port, &argv[6]);
  napi_create_int32(env, r->fd, &argv[7]);
  napi_create_int32(env, r->stage, &argv[8]);
  argv[9] = none;
  if (r->nbytes > 0) {
    /* JavaScript owns the bytes from here; the Buffer's collection frees them. */
    if (napi_create_external_buffer(env, r->nbytes, r->bytes, free_bytes, NULL, &argv[9]) == napi_ok) r->bytes = NULL;
    else argv[9] = none;
  }
  if (r->reason) napi_create_string_utf8(env, r->reason, NAPI_AUTO_LENGTH, &argv[10]);
  else argv[10] = none;
  argv[11] = none;
  if (r->kind != EV_HITS) {
    napi_value ab;
    void *data;
    if (napi_create_arraybuffer(env, 2 * sizeof(double), &data, &ab) == napi_ok) {
      memcpy(data, r->counts, 2 * sizeof(double));
      napi_create_typedarray(env, napi_float64_array, 2, ab, 0, &argv[11]);
    }
  }
  napi_create_double(env, r->accepted_ms, &argv[12]);
  napi_value global;
  napi_get_undefined(env, &global);
  napi_call_function(env, global, cb, 13, argv, NULL);
  free(r->bytes);
  free(r);
}

void hit_register(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    { "hitPublish", NULL, hit_publish, NULL, NULL, NULL, napi_enumerable, NULL },
    { "hitGrant", NULL, hit_grant, NULL, NULL, NULL, napi_enumerable, NULL },
    { "hitDrop", NULL, hit_drop, NULL, NULL, NULL, napi_enumerable, NULL },
    { "hitRevoke", NULL, hit_revoke, NULL, NULL, NULL, napi_enumerable, NULL },
    { "hitStats", NULL, hit_stats, NULL, NULL, NULL, napi_enumerable, NULL },
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
