/*
 * The native SOCKS5 accept path, in four parts with one direction of calls:
 *   door_binding.c  the JavaScript functions (doorInit, doorListen, ...) and the records back
 *      │            to JavaScript; the only part that knows Node-API beyond js_record
 *      ▼
 *   door_machine.c  listeners and handshakes on the relay thread: accept, read, ask, dial,
 *      │            reply, hand off; a client of the loop (loop.h) and of the splice tunnels
 *      ▼
 *   door_wire.c     the SOCKS5 greeting and CONNECT request, parsed (pure)
 *   door_memo.c     per listener: the approved sources and the remembered decisions (bounded)
 * The protocol with JavaScript is described in door_binding.c.
 */
#ifndef SOCKSTAP_DOOR_H
#define SOCKSTAP_DOOR_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "loop.h"

#define DOOR_NOAUTH 1    /* the listener may answer "no authentication" itself */
#define DOOR_HTTP 2      /* an HTTP listener: every approved connection goes to the hit path (hit.h) */
#define DOOR_HTTP_AUTO 4 /* an auto listener: a connection starting GET or HEAD goes to the hit path */
#define DOOR_IDLE_MS 5000 /* an HTTP keep-alive connection's idle time (src/frontdoors/http-proxy.ts) */
#define DOOR_BUF 600  /* a greeting (≤ 257) and a request (≤ 262) */

/* ---- door_wire.c: RFC 1928 §3 and §4, as far as this path takes them ---- */

typedef enum {
  WIRE_MORE,    /* not complete yet */
  WIRE_HANDOFF, /* not for this path: JavaScript answers it */
  WIRE_DONE     /* complete and for this path */
} wire_result;

/* A greeting offering "no authentication", which the listener may answer (`noauth`); on
 * WIRE_DONE, *used is its length. */
wire_result wire_greeting(const uint8_t *buf, size_t len, int noauth, size_t *used);

/* A CONNECT request that is exactly `len` bytes, to an address or a plain host name; on
 * WIRE_DONE, host (NUL-terminated) and *port. Bytes after it are a WIRE_HANDOFF. */
wire_result wire_connect(const uint8_t *q, size_t len, char host[256], int *port);

/* ---- door_memo.c ---- */

/* A CONNECT decision JavaScript let the thread repeat. */
typedef struct remembered {
  int64_t expires; /* 0: free */
  uint8_t src[16];
  int port;
  char *host;
  struct sockaddr_storage to;
  socklen_t tolen;
  int64_t timeout_ms, idle_ms;
} remembered;

typedef struct door_memo {
  uint8_t (*approved)[17]; /* [0] = 1 when used, [1..16] = the address as IPv6 (IPv4 mapped) */
  int n_approved;
  remembered *memory; /* allocated at the first decision */
} door_memo;

/* An address as the 16-byte key of both tables (IPv4 as IPv4-mapped IPv6). */
void memo_address_key(const struct sockaddr_storage *ss, uint8_t key[16]);
int memo_approved(const door_memo *m, const uint8_t key[16]);
void memo_approve(door_memo *m, const uint8_t key[16]);
void memo_forget_approved(door_memo *m);
/* The decision for (src, host, port) while it holds at `now`, else NULL. */
remembered *memo_recall(door_memo *m, const uint8_t src[16], const char *host, int port, int64_t now);
/* Keep a decision, replacing what its slot held. */
void memo_remember(door_memo *m, const remembered *decision);
void memo_forget(door_memo *m, const uint8_t src[16], const char *host, int port);
void memo_forget_all(door_memo *m);

/* ---- door_machine.c ---- */

enum { EV_REQUEST = 1, EV_HANDOFF, EV_FAILED, EV_ESTABLISHED, EV_GONE, EV_ACCEPT_ERROR };

/* What the thread tells JavaScript (see door_binding.c for the fields' meaning). */
typedef struct door_record {
  js_record head;
  int kind;
  uint32_t id, door;
  int port, peer_port, fd, stage;
  const char *reason;
  double *counts; /* a remembered request's live counts, handed to JavaScript */
  double accepted_ms;
  char host[256];
  char peer[INET6_ADDRSTRLEN];
  size_t nbytes;
  uint8_t bytes[DOOR_BUF];
} door_record;

/* What a JavaScript call asks the thread to do. */
typedef enum { V_CONNECT, V_REPLY, V_TAKE, V_ABORT, V_LISTEN, V_CONFIGURE, V_APPROVE, V_CLOSE, V_FORGET, V_TAP_HTTP } verdict_kind;

typedef struct verdict {
  verdict_kind what;
  uint32_t id;
  int rep;
  struct sockaddr_storage to;
  socklen_t tolen;
  int64_t timeout_ms, idle_ms, remember_ms;
  double *live;
  int fd, flags;
  uint8_t key[16];
} verdict;

/* Once, on the JavaScript thread: records are delivered by `deliver`; registers with the loop. */
void door_machine_init(void (*deliver)(napi_env env, napi_value loop_cb, js_record *r));
/* On the relay thread (through loop_run): carry out a verdict and free it. */
void door_apply(void *verdict);
/* listeners, handshakes, accepted, handedOff, remembered (any thread, relaxed). */
void door_figures(double out[5]);

/* ---- door_binding.c ---- */

/* The JavaScript callback records are delivered to (onEvent); 0 when there is none. */
int door_callback(napi_env env, napi_value *cb);

/* The door's JavaScript functions, added to the addon's exports. */
void door_register(napi_env env, napi_value exports);

#endif
