/*
 * The JavaScript side of the native SOCKS5 accept path (src/net/native-door.ts is its user): the
 * relay thread (loop.c) accepts on a SOCKS listener, reads the greeting and the request itself
 * (door_machine.c) and asks JavaScript only to decide, so a plain CONNECT runs one JavaScript call,
 * not Node's socket machinery, and then becomes a spliced tunnel without ever being a JavaScript
 * socket. docs/performance.md explains why. Each function below posts a verdict to the thread;
 * the thread's records come back through the loop's queue to onEvent.
 *
 *   doorInit(onEvent)                       once, after spliceInit; events come through the
 *                                           splice callback's queue (in the order sent)
 *   doorListen(fd, flags, handshakeMs) -> id  duplicates a listening socket and accepts on it
 *   doorConfigure(id, flags, handshakeMs)   new settings; forgets the approved sources and
 *                                           the remembered decisions
 *   doorApprove(id, address)                connections from this address take the native path
 *   doorClose(id)                           stop accepting (handshakes under way go on)
 *   doorConnect(connId, address, port, timeoutMs, idleMs, counts, rememberMs)
 *                                           dial; on success reply and splice, and remember
 *                                           the decision for rememberMs (0: not at all)
 *   doorForget(id)                          forget the listener's remembered decisions
 *   doorReply(connId, rep)                  SOCKS5 failure reply (rep < 0: none) and close
 *   doorTake(connId)                        hand the connection to JavaScript (stage 2)
 *   doorTapHttp(connId, firstRequestMs)     reply success and serve the tunnel's HTTP requests on
 *                                           the hit path (a cache-first HTTP tap); JavaScript gets
 *                                           it back at stage 4 (hit.h)
 *   doorAbort(id)                           end a handshake or a tunnel now
 *   doorStats()                             { listeners, handshakes, accepted, handedOff,
 *                                             remembered }
 *
 * onEvent(kind, id, door, host, port, peer, peerPort, fd, stage, bytes, reason, counts, acceptedMs):
 *   1 request      a CONNECT to host:port (a name or an address literal) from peer:peerPort;
 *                  stage 1 when the thread already dials it on a remembered decision: then
 *                  counts is the tunnel's live [up, down] Float64Array and no answer is wanted
 *                  unless the dial fails
 *   2 handoff      fd is JavaScript's now; bytes were read from it; stage as above; reason is
 *                  "handshake-timeout" when the deadline passed, else null
 *   3 failed       the dial of doorConnect failed; reason is the errno name
 *   4 established  replied and spliced; host:port is the proxy's outgoing address
 *   5 gone         the client went away before the reply (reason)
 *   6 accept-error accepting failed (reason: EMFILE...); the listener pauses for 250 ms
 *   7 hits         the hit path's answers since the last (bytes: packed, see hit_machine.c)
 *   8 http-end     a connection of the hit path with hits is over (counts: [read, written])
 * A handoff of the hit path (flags DOOR_HTTP, DOOR_HTTP_AUTO) is stage 0 when no hit was served
 * on it, else stage 3 with counts (its session exists already); bytes start at a request. A
 * tunnel given to it by doorTapHttp comes back at stage 4 (replied; counts; bytes start at a request).
 * acceptedMs is when the connection was accepted (ms since the epoch).
 * The tunnel's end comes as the splice relay's onDone(id, ...) with the same id.
 *
 * Remembered decisions: when JavaScript dials a CONNECT with rememberMs > 0, the thread keeps,
 * once the dial succeeded, the address that answered under (source address, host, port) on that
 * listener. The same request from the same source within rememberMs is dialed at once, without
 * waiting for JavaScript; JavaScript learns of it through the request event and keeps its
 * records as before. A failed dial forgets the entry and asks JavaScript (event 3). The table is
 * direct-mapped (a newer decision replaces an older one in its slot), so it is bounded.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "door.h"
#include "hit.h"

static napi_ref door_cb;
static int door_ready;

int door_callback(napi_env env, napi_value *cb) {
  return env && door_cb && napi_get_reference_value(env, door_cb, cb) == napi_ok && *cb;
}

static void free_counts(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  free(data);
}

/* onEvent's arguments, in this order. */
enum {
  A_KIND, A_ID, A_DOOR, A_HOST, A_PORT, A_PEER, A_PEER_PORT, A_FD, A_STAGE, A_BYTES, A_REASON, A_COUNTS, A_ACCEPTED,
  N_ARGS
};

static void deliver_door(napi_env env, napi_value loop_cb, js_record *rec) {
  (void)loop_cb;
  door_record *r = (door_record *)rec;
  napi_value cb;
  if (!env || !door_cb || napi_get_reference_value(env, door_cb, &cb) != napi_ok || !cb) {
    if (r->fd >= 0) close(r->fd); /* nobody will take it */
    free(r);
    return;
  }
  napi_value argv[N_ARGS], none;
  napi_get_null(env, &none);
  napi_create_int32(env, r->kind, &argv[A_KIND]);
  napi_create_uint32(env, r->id, &argv[A_ID]);
  napi_create_uint32(env, r->door, &argv[A_DOOR]);
  if (r->host[0]) napi_create_string_utf8(env, r->host, NAPI_AUTO_LENGTH, &argv[A_HOST]);
  else argv[A_HOST] = none;
  napi_create_int32(env, r->port, &argv[A_PORT]);
  napi_create_string_utf8(env, r->peer, NAPI_AUTO_LENGTH, &argv[A_PEER]);
  napi_create_int32(env, r->peer_port, &argv[A_PEER_PORT]);
  napi_create_int32(env, r->fd, &argv[A_FD]);
  napi_create_int32(env, r->stage, &argv[A_STAGE]);
  if (r->nbytes > 0) napi_create_buffer_copy(env, r->nbytes, r->bytes, NULL, &argv[A_BYTES]);
  else argv[A_BYTES] = none;
  if (r->reason) napi_create_string_utf8(env, r->reason, NAPI_AUTO_LENGTH, &argv[A_REASON]);
  else argv[A_REASON] = none;
  argv[A_COUNTS] = none;
  if (r->counts) {
    /* The tunnel writes these until its onDone; JavaScript keeps the array that long, and its
     * collection frees them. */
    napi_value ab;
    if (napi_create_external_arraybuffer(env, r->counts, 2 * sizeof(double), free_counts, NULL, &ab) != napi_ok ||
        napi_create_typedarray(env, napi_float64_array, 2, ab, 0, &argv[A_COUNTS]) != napi_ok)
      argv[A_COUNTS] = none; /* the counts stay with the tunnel (a small leak), the record goes on */
  }
  napi_create_double(env, r->accepted_ms, &argv[A_ACCEPTED]);
  napi_value global;
  napi_get_undefined(env, &global);
  napi_call_function(env, global, cb, N_ARGS, argv, NULL);
  free(r);
}

static napi_value post(napi_env env, verdict *v) {
  if (loop_run(door_apply, v) != 0) {
    free(v);
    return loop_throw(env, "ENOMEM", "door: out of memory");
  }
  return NULL;
}

static verdict *new_verdict(napi_env env, verdict_kind what) {
  if (!door_ready) {
    loop_throw(env, "ENATIVE", "door: doorInit was not called");
    return NULL;
  }
  verdict *v = calloc(1, sizeof *v);
  if (!v) {
    loop_throw(env, "ENOMEM", "door: out of memory");
    return NULL;
  }
  v->what = what;
  v->fd = -1;
  return v;
}

static int args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  return napi_get_cb_info(env, info, &argc, argv, NULL, NULL) == napi_ok && argc >= want;
}

static napi_value door_init(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!args(env, info, 1, argv)) return loop_throw(env, "EINVAL", "doorInit: expected a callback");
  if (!loop_running()) return loop_throw(env, "ENATIVE", "doorInit: spliceInit was not called");
  if (door_ready) return loop_throw(env, "EEXIST", "doorInit: already initialised");
  if (napi_create_reference(env, argv[0], 1, &door_cb) != napi_ok) return loop_throw(env, "ENATIVE", "doorInit: cannot keep the callback");
  door_machine_init(deliver_door);
  hit_machine_init(hit_deliver);
  door_ready = 1;
  return NULL;
}

static napi_value door_listen(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int32_t fd, flags;
  int64_t hs;
  if (!args(env, info, 3, argv) || napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
      napi_get_value_int32(env, argv[1], &flags) != napi_ok || napi_get_value_int64(env, argv[2], &hs) != napi_ok || fd < 0)
    return loop_throw(env, "EINVAL", "doorListen: expected (fd, flags, handshakeMs)");
  verdict *v = new_verdict(env, V_LISTEN);
  if (!v) return NULL;
  v->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (v->fd < 0) {
    int e = errno;
    free(v);
    return loop_throw(env, e == EMFILE ? "EMFILE" : "EBADF", "doorListen: cannot duplicate the listening socket");
  }
  v->id = loop_new_id();
  v->flags = flags;
  v->timeout_ms = hs;
  napi_value id;
  napi_create_uint32(env, v->id, &id);
  post(env, v);
  return id;
}

static napi_value door_configure(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  uint32_t id;
  int32_t flags;
  int64_t hs;
  if (!args(env, info, 3, argv) || napi_get_value_uint32(env, argv[0], &id) != napi_ok ||
      napi_get_value_int32(env, argv[1], &flags) != napi_ok || napi_get_value_int64(env, argv[2], &hs) != napi_ok)
    return loop_throw(env, "EINVAL", "doorConfigure: expected (id, flags, handshakeMs)");
  verdict *v = new_verdict(env, V_CONFIGURE);
  if (!v) return NULL;
  v->id = id;
  v->flags = flags;
  v->timeout_ms = hs;
  return post(env, v);
}

/* An address as the 16-byte key of the approved set; 0 when it is not an IP address. */
static int parse_address(napi_env env, napi_value value, int port, struct sockaddr_storage *ss, socklen_t *sl, uint8_t key[16]) {
  char text[INET6_ADDRSTRLEN + 8];
  size_t n;
  if (napi_get_value_string_utf8(env, value, text, sizeof text, &n) != napi_ok) return 0;
  memset(ss, 0, sizeof *ss);
  struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
  struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
  if (inet_pton(AF_INET, text, &a4->sin_addr) == 1) {
    a4->sin_family = AF_INET;
    a4->sin_port = htons((uint16_t)port);
    *sl = sizeof *a4;
  } else if (inet_pton(AF_INET6, text, &a6->sin6_addr) == 1) {
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons((uint16_t)port);
    *sl = sizeof *a6;
  } else {
    return 0;
  }
  if (key) memo_address_key(ss, key);
  return 1;
}

static napi_value door_approve(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  uint32_t id;
  if (!args(env, info, 2, argv) || napi_get_value_uint32(env, argv[0], &id) != napi_ok)
    return loop_throw(env, "EINVAL", "doorApprove: expected (id, address)");
  verdict *v = new_verdict(env, V_APPROVE);
  if (!v) return NULL;
  v->id = id;
  if (!parse_address(env, argv[1], 0, &v->to, &v->tolen, v->key)) {
    free(v);
    return loop_throw(env, "EINVAL", "doorApprove: not an IP address");
  }
  return post(env, v);
}

static napi_value door_id_call(napi_env env, napi_callback_info info, verdict_kind what, const char *usage) {
  napi_value argv[1];
  uint32_t id;
  if (!args(env, info, 1, argv) || napi_get_value_uint32(env, argv[0], &id) != napi_ok) return loop_throw(env, "EINVAL", usage);
  verdict *v = new_verdict(env, what);
  if (!v) return NULL;
  v->id = id;
  return post(env, v);
}

static napi_value door_close(napi_env env, napi_callback_info info) {
  return door_id_call(env, info, V_CLOSE, "doorClose: expected a listener id");
}

static napi_value door_take(napi_env env, napi_callback_info info) {
  return door_id_call(env, info, V_TAKE, "doorTake: expected a connection id");
}

static napi_value door_abort(napi_env env, napi_callback_info info) {
  return door_id_call(env, info, V_ABORT, "doorAbort: expected an id");
}

static napi_value door_reply(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  uint32_t id;
  int32_t rep;
  if (!args(env, info, 2, argv) || napi_get_value_uint32(env, argv[0], &id) != napi_ok || napi_get_value_int32(env, argv[1], &rep) != napi_ok ||
      rep > 255)
    return loop_throw(env, "EINVAL", "doorReply: expected (connId, rep)");
  verdict *v = new_verdict(env, V_REPLY);
  if (!v) return NULL;
  v->id = id;
  v->rep = rep;
  return post(env, v);
}

static napi_value door_connect(napi_env env, napi_callback_info info) {
  napi_value argv[7];
  uint32_t id;
  int32_t port;
  int64_t timeout, idle, remember;
  napi_typedarray_type ta_type;
  size_t ta_len = 0;
  void *ta_data = NULL;
  if (!args(env, info, 7, argv) || napi_get_value_uint32(env, argv[0], &id) != napi_ok || napi_get_value_int32(env, argv[2], &port) != napi_ok ||
      napi_get_value_int64(env, argv[3], &timeout) != napi_ok || napi_get_value_int64(env, argv[4], &idle) != napi_ok ||
      napi_get_typedarray_info(env, argv[5], &ta_type, &ta_len, &ta_data, NULL, NULL) != napi_ok || ta_type != napi_float64_array ||
      ta_len < 2 || napi_get_value_int64(env, argv[6], &remember) != napi_ok || port < 0 || port > 65535)
    return loop_throw(env, "EINVAL", "doorConnect: expected (connId, address, port, timeoutMs, idleMs, Float64Array(2), rememberMs)");
  verdict *v = new_verdict(env, V_CONNECT);
  if (!v) return NULL;
  v->id = id;
  if (!parse_address(env, argv[1], port, &v->to, &v->tolen, NULL)) {
    free(v);
    return loop_throw(env, "EINVAL", "doorConnect: not an IP address");
  }
  v->timeout_ms = timeout;
  v->idle_ms = idle > 0 ? idle : 0;
  v->live = ta_data;
  v->remember_ms = remember > 0 ? remember : 0;
  return post(env, v);
}

static napi_value door_tap_http(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  uint32_t id;
  int64_t first;
  if (!args(env, info, 2, argv) || napi_get_value_uint32(env, argv[0], &id) != napi_ok || napi_get_value_int64(env, argv[1], &first) != napi_ok)
    return loop_throw(env, "EINVAL", "doorTapHttp: expected (connId, firstRequestMs)");
  verdict *v = new_verdict(env, V_TAP_HTTP);
  if (!v) return NULL;
  v->id = id;
  v->timeout_ms = first > 0 ? first : 1;
  return post(env, v);
}

static napi_value door_forget(napi_env env, napi_callback_info info) {
  return door_id_call(env, info, V_FORGET, "doorForget: expected a listener id");
}

static napi_value door_stats(napi_env env, napi_callback_info info) {
  static const char *const names[] = { "listeners", "handshakes", "accepted", "handedOff", "remembered" };
  double values[5];
  door_figures(values);
  return loop_figures(env, names, values, 5);
}

void door_register(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    { "doorInit", NULL, door_init, NULL, NULL, NULL, napi_enumerable, NULL },
    { "doorListen", NULL, door_listen, NULL, NULL, NULL, napi_enumerable, NULL },
    { "doorConfigure", NULL, door_configure, NULL, NULL, NULL, napi_enumerable, NULL },
    { "doorApprove", NULL, door_approve, NULL, NULL, NULL, napi_enumerable, NULL },
    { "doorClose", NULL, door_close, NULL, NULL, NULL, napi_enumerable, NULL },
    { "doorConnect", NULL, door_connect, NULL, NULL, NULL, napi_enumerable, NULL },
    { "doorReply", NULL, door_reply, NULL, NULL, NULL, napi_enumerable, NULL },
    { "doorTake", NULL, door_take, NULL, NULL, NULL, napi_enumerable, NULL },
    { "doorAbort", NULL, door_abort, NULL, NULL, NULL, napi_enumerable, NULL },
    { "doorForget", NULL, door_forget, NULL, NULL, NULL, napi_enumerable, NULL },
    { "doorTapHttp", NULL, door_tap_http, NULL, NULL, NULL, napi_enumerable, NULL },
    { "doorStats", NULL, door_stats, NULL, NULL, NULL, napi_enumerable, NULL },
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
