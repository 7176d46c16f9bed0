/*
 * The native hit path: the relay thread answers simple HTTP cache hits itself (issue 16). Three
 * parts, calls in one direction:
 *   hit_binding.c  the JavaScript functions (hitInit, hitPublish, ...) and the records back to
 *      │           JavaScript (through the door's callback)
 *      ▼
 *   hit_machine.c  HTTP connections the door hands over (door_machine.c): read a request head,
 *      │           answer it from a granted object, or hand the connection to JavaScript at a
 *      │           request boundary; a client of the loop (loop.h)
 *      ▼
 *   hit_wire.c     an HTTP/1.1 request head, parsed and judged (pure)
 *   hit_table.c    the objects JavaScript published and the grants to (source, target)
 *
 * Nothing here decides anything JavaScript has not decided: an object is a cache entry JavaScript
 * served as a plain fresh hit, with the exact head it wrote (Age apart); a grant says that this
 * source's request for this exact target was answered so, and holds until JavaScript's deadline
 * (at most the entry's freshness, the plan memory's next forgetting, a reload). Every other
 * request goes to JavaScript's HTTP door with the bytes read, and the connection stays there.
 */
#ifndef SOCKSTAP_HIT_H
#define SOCKSTAP_HIT_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "loop.h"

#define HIT_BUF 8192 /* a request head the thread reads; a longer one goes to JavaScript */
#define HIT_SENDFILE_MIN (64 * 1024) /* bodies from this size on are sent from a memfd... */
#define HIT_MEMFD_MAX 256             /* ...while fewer than this many memfds are open (descriptors are a bound too) */
extern volatile long hit_memfds;

/* ---- hit_wire.c ---- */

typedef enum { HP_MORE, HP_HANDOFF, HP_OK } hit_parse_result;

typedef struct hit_request {
  int head;                 /* HEAD (no body) rather than GET */
  const char *target;       /* the request-target as sent (not NUL-terminated) */
  size_t ntarget;
  const char *ua, *referer; /* User-Agent and Referer values, or NULL */
  size_t nua, nreferer;
  const char *host;         /* the Host value (origin-form requests: required), or NULL */
  size_t nhost;
  size_t length;            /* bytes of the whole head, CRLF CRLF included */
} hit_request;

/*
 * A GET or HEAD of an absolute-form http:// target (`origin_form`: of an origin-form /path with
 * a Host, as in a tunnel), HTTP/1.1, with no field that changes how a cache answers
 * (conditionals, Range, Cache-Control, Pragma, credentials), no body, no upgrade, and Connection
 * absent or keep-alive: HP_OK. Anything else, or anything malformed: HP_HANDOFF.
 */
hit_parse_result hit_parse(const uint8_t *buf, size_t len, int origin_form, hit_request *out);

/* ---- hit_table.c ---- */

typedef struct hit_object {
  uint32_t handle; /* JavaScript's name for it */
  int refs;        /* grants and responses being written */
  int dropped;
  int status;
  int64_t fresh_until; /* wall clock ms */
  double age_origin;   /* wall clock ms: Age is floor((now - age_origin) / 1000) */
  uint8_t *pre, *post, *body; /* the head up to "age: ", after its value, the body (NULL when in body_fd) */
  size_t npre, npost, nbody;
  int body_fd; /* a large body: a memfd sent with sendfile(2) (one copy fewer than writev); else -1 */
  struct hit_object *hnext;
} hit_object;

/* Bytes of objects held (dropped ones included until their last response is written). */
extern size_t hit_table_bytes;
extern long hit_table_objects;

/* Takes the buffers (malloc'd). Replaces an object of the same handle. */
void hit_table_publish(hit_object *obj);
void hit_table_drop(uint32_t handle);
/* A grant of `handle` for (door, source, target) until `expires` (wall ms); 0 when the object is not held. */
int hit_table_grant(uint32_t door, const uint8_t src[16], const char *target, size_t ntarget, uint32_t handle, int64_t expires);
/* Forget every grant (of one door, or all with door 0). */
void hit_table_revoke(uint32_t door);
/* The object granted for this request at `now`, with a reference the caller releases; else NULL. */
hit_object *hit_table_find(uint32_t door, const uint8_t src[16], const char *target, size_t ntarget, int64_t now);
void hit_object_release(hit_object *obj);
/* Drop grants whose deadline or object's freshness has passed (the sweep). */
void hit_table_sweep(int64_t now);

/* ---- hit_machine.c ---- */

/* Kinds of the door's events that the hit path sends (door_binding.c lists the others). */
enum { EV_HITS = 7, EV_HTTP_END = 8 };

/*
 * A connection the door read up to `n` bytes of (the start of an HTTP request), from now on the
 * hit path's. `tunnel` (NULL for the HTTP door's connections): the SOCKS5 CONNECT's "host:port",
 * replied to already; its requests are origin-form and their grants are named
 * "T host:port HOST PATH" (HOST the request's Host). A HEAD's grant name starts "HEAD ". A tunnel's connection has its session in
 * JavaScript from the start, and every deadline hands it over (stage 4).
 */
void hit_adopt(uint32_t id, uint32_t door, int fd, const uint8_t *bytes, size_t n, const char *peer, int peer_port, double accepted_ms,
               const uint8_t src_key[16], int64_t head_ms, int64_t idle_ms, const char *tunnel);
/* End a connection of the hit path now; 0 when it has none with this id. */
int hit_abort(uint32_t id);
/* hitsServed, handedOff, connections, objects, bytes (any thread, relaxed). */
void hit_figures(double out[5]);
void hit_machine_init(void (*deliver)(napi_env env, napi_value loop_cb, js_record *r));

/* A record of the hit path for JavaScript. */
typedef struct hit_record {
  js_record head;
  int kind;       /* EV_HANDOFF (door.h), EV_HITS, EV_HTTP_END */
  uint32_t id, door;
  int fd, stage;  /* EV_HANDOFF */
  double counts[2]; /* bytes read and written natively (EV_HTTP_END, EV_HANDOFF with stage 3) */
  const char *reason;
  char peer[INET6_ADDRSTRLEN];
  int peer_port;
  double accepted_ms;
  size_t nbytes;
  uint8_t *bytes; /* EV_HANDOFF: the bytes read; EV_HITS: the packed hits (hit_machine.c) */
} hit_record;

/* ---- hit_binding.c ---- */

void hit_register(napi_env env, napi_value exports);
/* Delivers a hit_record through the door's callback (door_binding.c). */
void hit_deliver(napi_env env, napi_value loop_cb, js_record *r);

#endif
