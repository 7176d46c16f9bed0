/*
 * The native SOCKS5 accept path: the relay thread (splice_relay.c) accepts on a SOCKS listener,
 * reads the greeting and the request, and asks JavaScript only to decide (src/net/native-door.ts):
 * so a plain CONNECT runs one JavaScript call, not Node's socket machinery, and then becomes a
 * spliced tunnel without ever being a JavaScript socket. docs/performance.md explains why.
 *
 * It takes only the path it is sure of, and hands everything else to JavaScript with the bytes
 * read so far and the descriptor, where the JavaScript doors answer as they always do:
 *   - a client whose address this listener has not approved yet (JavaScript approves a source
 *     after checking RELIABLE on its first connection; a reload forgets every approval);
 *   - a first byte other than 5 (SOCKS4, HTTP on the auto door), a greeting without "no
 *     authentication", or a listener that must authenticate (stage 0: nothing answered yet);
 *   - a request that is not a well-formed CONNECT, or has bytes after it (stage 1: the greeting
 *     was answered with "no authentication");
 *   - the end of the stream or an error during the handshake, and its deadline (stage 0/1);
 *   - a CONNECT that JavaScript decides to keep (a tap, an upstream route, shaping: stage 2).
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
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "relay_thread.h"

#define DOOR_NOAUTH 1 /* the listener may answer "no authentication" itself */

#define CONN_BUF 600   /* a greeting (≤ 257) and a request (≤ 262) */
#define CONN_HASH 1024
#define APPROVED_MAX 4096 /* approved sources per listener (open addressing, power of two) */
#define ACCEPT_BATCH 64
#define REMEMBER_SLOTS 1024 /* remembered decisions per listener (direct-mapped, power of two) */

enum { ST_GREETING, ST_REQUEST, ST_DECIDING, ST_CONNECTING };
enum { EV_REQUEST = 1, EV_HANDOFF, EV_FAILED, EV_ESTABLISHED, EV_GONE, EV_ACCEPT_ERROR };

/* A CONNECT decision JavaScript let the thread repeat (see "Remembered decisions" above). */
typedef struct remembered {
  int64_t expires; /* 0: free */
  uint8_t src[16];
  int port;
  char *host;
  struct sockaddr_storage to;
  socklen_t tolen;
  int64_t timeout_ms, idle_ms;
} remembered;

typedef struct listener {
  ep_kind kind; /* EP_LISTENER */
  uint32_t id;
  int fd;
  int flags;
  int64_t handshake_ms;
  int64_t paused_until; /* after EMFILE: accept again from then */
  int closed;
  struct listener *next;
  uint8_t (*approved)[17]; /* [0] = 1 when used, [1..16] = the address as IPv6 (IPv4 mapped) */
  int n_approved;
  remembered *memory; /* REMEMBER_SLOTS entries, allocated at the first one */
} listener;

typedef struct conn conn;
typedef struct dial_ep {
  ep_kind kind; /* EP_DIAL */
  conn *c;
} dial_ep;

struct conn {
  ep_kind kind; /* EP_CONN */
  dial_ep dial;
  uint32_t id, door;
  int fd, sfd;
  int state;
  int dead;
  size_t len, req_off;
  int64_t deadline;
  int64_t idle_ms;
  double *live;
  int64_t remember_ms; /* from doorConnect: keep this decision once the dial succeeds */
  struct door_record *announce; /* dialed on a remembered decision: its request record, sent with the dial's outcome */
  struct sockaddr_storage to; /* the address being dialed */
  socklen_t tolen;
  int64_t timeout_ms;
  char peer[INET6_ADDRSTRLEN];
  int peer_port;
  double accepted_ms; /* wall clock, for the session's start */
  uint8_t src[16]; /* the peer as the key of approved sources and remembered decisions */
  int dport;
  char host[256]; /* the request's destination */
  conn *hnext, *prev, *next, *dnext;
  uint8_t buf[CONN_BUF];
};

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
  uint8_t bytes[CONN_BUF];
} door_record;

static napi_ref door_cb;
static int door_ready;

/* Thread-owned state. */
static listener *listeners;
static listener *dead_listeners;
static conn *conns;
static conn *conn_graveyard;
static conn *by_id[CONN_HASH];

/* Figures for doorStats (relaxed). */
static volatile long n_listeners, n_handshakes, n_accepted, n_handed_off, n_remembered;

/* ---- records for JavaScript ---- */

static void free_counts(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  free(data);
}

static void deliver_door(napi_env env, napi_value done_cb, js_record *rec) {
  door_record *r = (door_record *)rec;
  napi_value cb;
  if (!env || !door_cb || napi_get_reference_value(env, door_cb, &cb) != napi_ok || !cb) {
    if (r->fd >= 0) close(r->fd); /* nobody will take it */
    free(r);
    return;
  }
  napi_value argv[13], undef;
  napi_get_null(env, &undef);
  napi_create_int32(env, r->kind, &argv[0]);
  napi_create_uint32(env, r->id, &argv[1]);
  napi_create_uint32(env, r->door, &argv[2]);
  if (r->host[0]) napi_create_string_utf8(env, r->host, NAPI_AUTO_LENGTH, &argv[3]);
  else argv[3] = undef;
  napi_create_int32(env, r->port, &argv[4]);
  napi_create_string_utf8(env, r->peer, NAPI_AUTO_LENGTH, &argv[5]);
  napi_create_int32(env, r->peer_port, &argv[6]);
  napi_create_int32(env, r->fd, &argv[7]);
  napi_create_int32(env, r->stage, &argv[8]);
  if (r->nbytes > 0) napi_create_buffer_copy(env, r->nbytes, r->bytes, NULL, &argv[9]);
  else argv[9] = undef;
  if (r->reason) napi_create_string_utf8(env, r->reason, NAPI_AUTO_LENGTH, &argv[10]);
  else argv[10] = undef;
  argv[11] = undef;
  if (r->counts) {
    /* The tunnel writes these until its onDone; JavaScript keeps the array that long, and its
     * collection frees them. */
    napi_value ab;
    if (napi_create_external_arraybuffer(env, r->counts, 2 * sizeof(double), free_counts, NULL, &ab) != napi_ok ||
        napi_create_typedarray(env, napi_float64_array, 2, ab, 0, &argv[11]) != napi_ok)
      argv[11] = undef; /* the counts stay with the tunnel (a small leak), the record goes on */
  }
  napi_create_double(env, r->accepted_ms, &argv[12]);
  napi_value global;
  napi_get_undefined(env, &global);
  napi_call_function(env, global, cb, 13, argv, NULL);
  free(r);
}

static door_record *record(int kind, conn *c) {
  door_record *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  r->head.deliver = deliver_door;
  r->kind = kind;
  r->fd = -1;
  if (c) {
    r->id = c->id;
    r->door = c->door;
    memcpy(r->peer, c->peer, sizeof r->peer);
    r->peer_port = c->peer_port;
    r->accepted_ms = c->accepted_ms;
  }
  return r;
}

/* ---- connections ---- */

static void conn_unlink(conn *c) {
  conn **p = &by_id[c->id % CONN_HASH];
  while (*p && *p != c) p = &(*p)->hnext;
  if (*p) *p = c->hnext;
  if (c->prev) c->prev->next = c->next;
  else conns = c->next;
  if (c->next) c->next->prev = c->prev;
  c->dead = 1;
  c->dnext = conn_graveyard;
  conn_graveyard = c;
  __sync_fetch_and_sub(&n_handshakes, 1);
}

static conn *conn_find(uint32_t id) {
  for (conn *c = by_id[id % CONN_HASH]; c; c = c->hnext)
    if (c->id == id) return c;
  return NULL;
}

static void drop_server(conn *c) {
  if (c->sfd >= 0) {
    epoll_ctl(relay_epfd, EPOLL_CTL_DEL, c->sfd, NULL);
    close(c->sfd);
    c->sfd = -1;
  }
}

/* Close everything of a connection JavaScript knows about or never will. */
static void conn_close(conn *c) {
  if (c->announce) { /* JavaScript never heard of it, and no tunnel counts into these */
    free(c->announce->counts);
    free(c->announce);
    c->announce = NULL;
  }
  drop_server(c);
  if (c->fd >= 0) {
    epoll_ctl(relay_epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
  }
  conn_unlink(c);
}

/* JavaScript takes the client socket from here (stage 0, 1 or 2), with the bytes not consumed. */
static void handoff(conn *c, int stage, const char *reason) {
  drop_server(c);
  epoll_ctl(relay_epfd, EPOLL_CTL_DEL, c->fd, NULL);
  door_record *r = record(EV_HANDOFF, c);
  if (!r) {
    conn_close(c);
    return;
  }
  r->fd = c->fd;
  r->stage = stage;
  r->reason = reason;
  size_t from = stage == 0 ? 0 : stage == 1 ? c->req_off : c->len;
  r->nbytes = c->len - from;
  memcpy(r->bytes, c->buf + from, r->nbytes);
  c->fd = -1;
  conn_unlink(c);
  __sync_fetch_and_add(&n_handed_off, 1);
  relay_post_js(&r->head);
}

static int domain_ok(const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++) {
    uint8_t ch = p[i];
    if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' || ch == '-' || ch == '_'))
      return 0;
  }
  return 1;
}

static listener *listener_find(uint32_t id);
static remembered *recall(listener *l, conn *c);
static void dial_to(conn *c, const struct sockaddr_storage *to, socklen_t tolen, int64_t timeout_ms, int64_t idle_ms, double *live,
                    int64_t remember_ms);

/*
 * The request is complete: ask JavaScript, or dial at once on a remembered decision (and tell
 * JavaScript). The client is out of the epoll set until the verdict.
 */
static void ask(conn *c, const char *host, int port) {
  door_record *r = record(EV_REQUEST, c);
  if (!r) {
    conn_close(c);
    return;
  }
  epoll_ctl(relay_epfd, EPOLL_CTL_DEL, c->fd, NULL);
  c->state = ST_DECIDING;
  snprintf(c->host, sizeof c->host, "%s", host);
  c->dport = port;
  snprintf(r->host, sizeof r->host, "%s", host);
  r->port = port;
  remembered *m = recall(listener_find(c->door), c);
  double *counts = m ? calloc(2, sizeof(double)) : NULL;
  if (!counts) {
    relay_post_js(&r->head);
    return;
  }
  r->stage = 1;
  r->counts = counts;
  c->announce = r; /* sent just before the dial's outcome: one wake-up of JavaScript, not two */
  __sync_fetch_and_add(&n_remembered, 1);
  dial_to(c, &m->to, m->tolen, m->timeout_ms, m->idle_ms, counts, 0);
}

/* Parse what has arrived; returns when more bytes are needed or the connection moved on. */
static void parse(conn *c, listener *l) {
  if (c->state == ST_GREETING) {
    if (c->len < 1) return;
    if (c->buf[0] != 5) { handoff(c, 0, NULL); return; }
    if (c->len < 2) return;
    size_t n = c->buf[1];
    if (n == 0 || !l || !(l->flags & DOOR_NOAUTH)) { handoff(c, 0, NULL); return; }
    if (c->len < 2 + n) return;
    if (!memchr(c->buf + 2, 0x00, n)) { handoff(c, 0, NULL); return; }
    static const uint8_t noauth[2] = { 5, 0 };
    c->req_off = 2 + n;
    c->state = ST_REQUEST;
    if (write(c->fd, noauth, 2) != 2) { handoff(c, 1, NULL); return; } /* JavaScript meets the error */
  }
  if (c->state != ST_REQUEST) return;
  const uint8_t *q = c->buf + c->req_off;
  size_t have = c->len - c->req_off, need;
  if (have < 4) return;
  if (q[0] != 5 || q[1] != 1 || q[2] != 0) { handoff(c, 1, NULL); return; } /* BIND, UDP, malformed */
  char host[256];
  switch (q[3]) {
    case 1: need = 4 + 4 + 2; break;
    case 4: need = 4 + 16 + 2; break;
    case 3:
      if (have < 5) return;
      if (q[4] == 0) { handoff(c, 1, NULL); return; }
      need = 5 + (size_t)q[4] + 2;
      break;
    default: { handoff(c, 1, NULL); return; }
  }
  if (have < need) return;
  if (have > need) { handoff(c, 1, NULL); return; } /* bytes after the request: JavaScript keeps them */
  if (q[3] == 1) inet_ntop(AF_INET, q + 4, host, sizeof host);
  else if (q[3] == 4) inet_ntop(AF_INET6, q + 4, host, sizeof host);
  else {
    if (!domain_ok(q + 5, q[4])) { handoff(c, 1, NULL); return; }
    memcpy(host, q + 5, q[4]);
    host[q[4]] = 0;
  }
  int port = (q[need - 2] << 8) | q[need - 1];
  ask(c, host, port);
}

static listener *listener_find(uint32_t id) {
  for (listener *l = listeners; l; l = l->next)
    if (l->id == id) return l;
  return NULL;
}

static void conn_readable(conn *c) {
  ssize_t n = read(c->fd, c->buf + c->len, CONN_BUF - c->len);
  if (n > 0) {
    c->len += (size_t)n;
    parse(c, listener_find(c->door));
    if (!c->dead && c->len == CONN_BUF) handoff(c, c->state == ST_GREETING ? 0 : 1, NULL); /* JavaScript refuses it */
    return;
  }
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  /* The end or an error mid-handshake: JavaScript answers it as its doors always did. */
  handoff(c, c->state == ST_GREETING ? 0 : 1, NULL);
}

/* ---- approved sources ---- */

static void address_key(const struct sockaddr_storage *ss, uint8_t key[16]) {
  if (ss->ss_family == AF_INET) {
    memset(key, 0, 10);
    key[10] = key[11] = 0xff;
    memcpy(key + 12, &((const struct sockaddr_in *)ss)->sin_addr, 4);
  } else {
    memcpy(key, &((const struct sockaddr_in6 *)ss)->sin6_addr, 16);
  }
}

static uint32_t key_hash(const uint8_t key[16]) {
  uint32_t h = 2166136261u;
  for (int i = 0; i < 16; i++) h = (h ^ key[i]) * 16777619u;
  return h;
}

static int approved(listener *l, const uint8_t key[16]) {
  if (!l->approved) return 0;
  for (uint32_t i = key_hash(key) & (APPROVED_MAX - 1), k = 0; k < APPROVED_MAX; k++, i = (i + 1) & (APPROVED_MAX - 1)) {
    if (!l->approved[i][0]) return 0;
    if (memcmp(l->approved[i] + 1, key, 16) == 0) return 1;
  }
  return 0;
}

static void approve(listener *l, const uint8_t key[16]) {
  if (l->n_approved >= APPROVED_MAX / 2) return; /* full enough: the rest go through JavaScript */
  if (!l->approved && !(l->approved = calloc(APPROVED_MAX, sizeof *l->approved))) return;
  for (uint32_t i = key_hash(key) & (APPROVED_MAX - 1);; i = (i + 1) & (APPROVED_MAX - 1)) {
    if (!l->approved[i][0]) {
      l->approved[i][0] = 1;
      memcpy(l->approved[i] + 1, key, 16);
      l->n_approved++;
      return;
    }
    if (memcmp(l->approved[i] + 1, key, 16) == 0) return;
  }
}

/* ---- remembered decisions ---- */

static remembered *memory_slot(listener *l, conn *c) {
  uint32_t h = key_hash(c->src);
  for (const char *p = c->host; *p; p++) h = (h ^ (uint8_t)*p) * 16777619u;
  h = (h ^ (uint32_t)c->dport) * 16777619u;
  return &l->memory[h & (REMEMBER_SLOTS - 1)];
}

static int memory_matches(const remembered *m, const conn *c) {
  return m->expires && m->port == c->dport && memcmp(m->src, c->src, 16) == 0 && strcmp(m->host, c->host) == 0;
}

static void memory_clear_slot(remembered *m) {
  free(m->host);
  memset(m, 0, sizeof *m);
}

/* The decision for this connection's source, host and port, while it holds; else NULL. */
static remembered *recall(listener *l, conn *c) {
  if (!l || !l->memory) return NULL;
  remembered *m = memory_slot(l, c);
  if (!memory_matches(m, c)) return NULL;
  if (relay_now_ms() >= m->expires) {
    memory_clear_slot(m);
    return NULL;
  }
  return m;
}

/* Keep the decision of a dial that succeeded (c->to answered), replacing its slot's. */
static void remember(listener *l, conn *c) {
  if (!l->memory && !(l->memory = calloc(REMEMBER_SLOTS, sizeof *l->memory))) return;
  char *host = strdup(c->host);
  if (!host) return;
  remembered *m = memory_slot(l, c);
  memory_clear_slot(m);
  m->expires = relay_now_ms() + c->remember_ms;
  memcpy(m->src, c->src, 16);
  m->port = c->dport;
  m->host = host;
  m->to = c->to;
  m->tolen = c->tolen;
  m->timeout_ms = c->timeout_ms;
  m->idle_ms = c->idle_ms;
}

static void forget(listener *l, conn *c) {
  if (!l || !l->memory) return;
  remembered *m = memory_slot(l, c);
  if (memory_matches(m, c)) memory_clear_slot(m);
}

static void forget_all(listener *l) {
  if (!l->memory) return;
  for (int i = 0; i < REMEMBER_SLOTS; i++) free(l->memory[i].host);
  free(l->memory);
  l->memory = NULL;
}

/* ---- accepting ---- */

static void accept_some(listener *l) {
  for (int i = 0; i < ACCEPT_BATCH; i++) {
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    int fd = accept4(l->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED) return;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        struct epoll_event ev = { 0 };
        ev.data.ptr = l;
        epoll_ctl(relay_epfd, EPOLL_CTL_MOD, l->fd, &ev);
        l->paused_until = relay_now_ms() + 250;
        door_record *r = record(EV_ACCEPT_ERROR, NULL);
        if (r) {
          r->door = l->id;
          r->reason = errno == EMFILE ? "EMFILE" : errno == ENFILE ? "ENFILE" : "ENOMEM";
          relay_post_js(&r->head);
        }
      }
      return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    conn *c = malloc(sizeof *c);
    if (!c) {
      close(fd);
      continue;
    }
    memset(c, 0, offsetof(conn, buf));
    c->kind = EP_CONN;
    c->dial.kind = EP_DIAL;
    c->dial.c = c;
    c->id = relay_new_id();
    c->door = l->id;
    c->fd = fd;
    c->sfd = -1;
    c->state = ST_GREETING;
    c->deadline = relay_now_ms() + l->handshake_ms;
    struct timespec wall;
    clock_gettime(CLOCK_REALTIME, &wall);
    c->accepted_ms = (double)wall.tv_sec * 1e3 + (double)(wall.tv_nsec / 1000000);
    if (ss.ss_family == AF_INET) {
      struct sockaddr_in *a = (struct sockaddr_in *)&ss;
      inet_ntop(AF_INET, &a->sin_addr, c->peer, sizeof c->peer);
      c->peer_port = ntohs(a->sin_port);
    } else {
      struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
      inet_ntop(AF_INET6, &a->sin6_addr, c->peer, sizeof c->peer);
      c->peer_port = ntohs(a->sin6_port);
    }
    c->hnext = by_id[c->id % CONN_HASH];
    by_id[c->id % CONN_HASH] = c;
    c->next = conns;
    if (conns) conns->prev = c;
    conns = c;
    __sync_fetch_and_add(&n_handshakes, 1);
    __sync_fetch_and_add(&n_accepted, 1);
    address_key(&ss, c->src);
    if (!approved(l, c->src)) {
      handoff(c, 0, NULL); /* JavaScript checks the source (RELIABLE) and may approve it */
      continue;
    }
    struct epoll_event ev;
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.ptr = c;
    if (epoll_ctl(relay_epfd, EPOLL_CTL_ADD, fd, &ev) != 0) handoff(c, 0, NULL);
  }
}

/* ---- dialing ---- */

static const char *errno_name(int e) {
  switch (e) {
    case ECONNREFUSED: return "ECONNREFUSED";
    case ETIMEDOUT: return "ETIMEDOUT";
    case EHOSTUNREACH: return "EHOSTUNREACH";
    case ENETUNREACH: return "ENETUNREACH";
    case ECONNRESET: return "ECONNRESET";
    case EADDRNOTAVAIL: return "EADDRNOTAVAIL";
    case EACCES: return "EACCES";
    case EPERM: return "EPERM";
    case EMFILE: return "EMFILE";
    case ENFILE: return "ENFILE";
    case EAFNOSUPPORT: return "EAFNOSUPPORT";
    default: return "EUPSTREAM";
  }
}

/* A remembered dial's request record goes to JavaScript before anything else of the connection. */
static void announce(conn *c) {
  if (!c->announce) return;
  relay_post_js(&c->announce->head);
  c->announce = NULL;
}

static void dial_failed(conn *c, int e) {
  if (c->announce) forget(listener_find(c->door), c); /* a remembered decision gone stale: JavaScript decides again */
  announce(c);
  drop_server(c);
  c->state = ST_DECIDING;
  door_record *r = record(EV_FAILED, c);
  if (!r) {
    conn_close(c);
    return;
  }
  r->reason = errno_name(e);
  relay_post_js(&r->head);
}

static void gone(conn *c, const char *reason) {
  announce(c);
  door_record *r = record(EV_GONE, c);
  if (r) r->reason = reason;
  conn_close(c);
  if (r) relay_post_js(&r->head);
}

/* The server answered: reply to the client and make it a spliced tunnel. */
static void connected(conn *c) {
  announce(c);
  epoll_ctl(relay_epfd, EPOLL_CTL_DEL, c->sfd, NULL);
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  uint8_t reply[22] = { 5, 0, 0 };
  size_t rl;
  door_record *r = record(EV_ESTABLISHED, c);
  if (!r) { gone(c, "ENOMEM"); return; }
  if (getsockname(c->sfd, (struct sockaddr *)&ss, &sl) == 0 && ss.ss_family == AF_INET6) {
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
    reply[3] = 4;
    memcpy(reply + 4, &a->sin6_addr, 16);
    memcpy(reply + 20, &a->sin6_port, 2);
    rl = 22;
    inet_ntop(AF_INET6, &a->sin6_addr, r->host, sizeof r->host);
    r->port = ntohs(a->sin6_port);
  } else {
    struct sockaddr_in *a = (struct sockaddr_in *)&ss;
    reply[3] = 1;
    if (ss.ss_family == AF_INET) {
      memcpy(reply + 4, &a->sin_addr, 4);
      memcpy(reply + 8, &a->sin_port, 2);
      inet_ntop(AF_INET, &a->sin_addr, r->host, sizeof r->host);
      r->port = ntohs(a->sin_port);
    } else {
      snprintf(r->host, sizeof r->host, "0.0.0.0");
    }
    rl = 10;
  }
  if (write(c->fd, reply, rl) != (ssize_t)rl) {
    free(r);
    { gone(c, "client-gone"); return; }
  }
  if (c->remember_ms > 0) {
    listener *l = listener_find(c->door);
    if (l && !l->closed) remember(l, c);
  }
  int cfd = c->fd, sfd = c->sfd;
  c->fd = c->sfd = -1;
  uint32_t id = c->id;
  int64_t idle = c->idle_ms;
  double *live = c->live;
  conn_unlink(c);
  relay_post_js(&r->head); /* before the tunnel can end: onDone comes through the same queue */
  relay_adopt(id, cfd, sfd, idle, live);
}

static void dial_ready(conn *c) {
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(c->sfd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
  if (err == EINPROGRESS) return;
  if (err) dial_failed(c, err);
  else connected(c);
}

/* ---- the thread's side of the JavaScript calls ---- */

/* What a JavaScript call asks the thread to do. */
typedef enum { V_CONNECT, V_REPLY, V_TAKE, V_ABORT, V_LISTEN, V_CONFIGURE, V_APPROVE, V_CLOSE, V_FORGET } verdict_kind;

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

static void dial_to(conn *c, const struct sockaddr_storage *to, socklen_t tolen, int64_t timeout_ms, int64_t idle_ms, double *live,
                    int64_t remember_ms) {
  c->to = *to;
  c->tolen = tolen;
  c->timeout_ms = timeout_ms;
  c->idle_ms = idle_ms;
  c->live = live;
  c->remember_ms = remember_ms;
  c->sfd = socket(to->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (c->sfd < 0) { dial_failed(c, errno); return; }
  int one = 1;
  setsockopt(c->sfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(c->sfd, (const struct sockaddr *)to, tolen) == 0) { connected(c); return; }
  if (errno != EINPROGRESS) { dial_failed(c, errno); return; }
  c->state = ST_CONNECTING;
  c->deadline = timeout_ms > 0 ? relay_now_ms() + timeout_ms : INT64_MAX;
  struct epoll_event ev;
  ev.events = EPOLLOUT;
  ev.data.ptr = &c->dial;
  if (epoll_ctl(relay_epfd, EPOLL_CTL_ADD, c->sfd, &ev) != 0) dial_failed(c, errno);
}

static void listener_close(listener *l) {
  if (l->closed) return;
  l->closed = 1;
  epoll_ctl(relay_epfd, EPOLL_CTL_DEL, l->fd, NULL);
  close(l->fd);
  listener **p = &listeners;
  while (*p && *p != l) p = &(*p)->next;
  if (*p) *p = l->next;
  l->next = dead_listeners;
  dead_listeners = l;
  __sync_fetch_and_sub(&n_listeners, 1);
}

static void run_verdict(void *arg) {
  verdict *v = arg;
  listener *l;
  conn *c;
  switch (v->what) {
    case V_LISTEN:
      l = calloc(1, sizeof *l);
      if (!l) {
        close(v->fd);
        break;
      }
      l->kind = EP_LISTENER;
      l->id = v->id;
      l->fd = v->fd;
      l->flags = v->flags;
      l->handshake_ms = v->timeout_ms;
      l->next = listeners;
      listeners = l;
      __sync_fetch_and_add(&n_listeners, 1);
      {
        struct epoll_event ev;
        ev.events = EPOLLIN;
        ev.data.ptr = l;
        epoll_ctl(relay_epfd, EPOLL_CTL_ADD, l->fd, &ev);
      }
      break;
    case V_CONFIGURE:
      if ((l = listener_find(v->id))) {
        l->flags = v->flags;
        l->handshake_ms = v->timeout_ms;
        free(l->approved);
        l->approved = NULL;
        l->n_approved = 0;
        forget_all(l);
      }
      break;
    case V_FORGET:
      if ((l = listener_find(v->id))) forget_all(l);
      break;
    case V_APPROVE:
      if ((l = listener_find(v->id))) approve(l, v->key);
      break;
    case V_CLOSE:
      if ((l = listener_find(v->id))) listener_close(l);
      break;
    case V_ABORT:
      if ((c = conn_find(v->id))) conn_close(c);
      else relay_abort_tunnel(v->id);
      break;
    default:
      c = conn_find(v->id);
      if (!c || c->state != ST_DECIDING) break; /* aborted meanwhile */
      if (v->what == V_CONNECT) dial_to(c, &v->to, v->tolen, v->timeout_ms, v->idle_ms, v->live, v->remember_ms);
      else if (v->what == V_TAKE) handoff(c, 2, NULL);
      else {
        if (v->rep >= 0) {
          uint8_t reply[10] = { 5, (uint8_t)v->rep, 0, 1 };
          (void)!write(c->fd, reply, sizeof reply);
        }
        conn_close(c);
      }
  }
  free(v);
}

/* ---- hooks called by the relay thread ---- */

void door_event(void *ptr, uint32_t events) {
  ep_kind kind = *(ep_kind *)ptr;
  if (kind == EP_LISTENER) {
    listener *l = ptr;
    if (!l->closed) accept_some(l);
    return;
  }
  if (kind == EP_DIAL) {
    conn *c = ((dial_ep *)ptr)->c;
    if (!c->dead && c->state == ST_CONNECTING) dial_ready(c);
    return;
  }
  conn *c = ptr;
  if (c->dead) return;
  if (c->state == ST_GREETING || c->state == ST_REQUEST) conn_readable(c);
}

void door_sweep(int64_t now) {
  for (listener *l = listeners; l; l = l->next) {
    if (l->paused_until && now >= l->paused_until) {
      l->paused_until = 0;
      struct epoll_event ev;
      ev.events = EPOLLIN;
      ev.data.ptr = l;
      epoll_ctl(relay_epfd, EPOLL_CTL_MOD, l->fd, &ev);
    }
  }
  conn *c = conns;
  while (c) {
    conn *next = c->next;
    if (now >= c->deadline) {
      if (c->state == ST_CONNECTING) dial_failed(c, ETIMEDOUT);
      else if (c->state != ST_DECIDING) handoff(c, c->state == ST_GREETING ? 0 : 1, "handshake-timeout");
    }
    c = next;
  }
}

void door_bury(void) {
  while (conn_graveyard) {
    conn *c = conn_graveyard;
    conn_graveyard = c->dnext;
    free(c);
  }
  while (dead_listeners) {
    listener *l = dead_listeners;
    dead_listeners = l->next;
    free(l->approved);
    forget_all(l);
    free(l);
  }
}

/* ---- JavaScript functions ---- */

static napi_value fail(napi_env env, const char *code, const char *msg) {
  napi_throw_error(env, code, msg);
  return NULL;
}

static napi_value post(napi_env env, verdict *v) {
  if (relay_run(run_verdict, v) != 0) {
    free(v);
    return fail(env, "ENOMEM", "door: out of memory");
  }
  return NULL;
}

static verdict *new_verdict(napi_env env, verdict_kind what) {
  if (!door_ready) {
    fail(env, "ENATIVE", "door: doorInit was not called");
    return NULL;
  }
  verdict *v = calloc(1, sizeof *v);
  if (!v) {
    fail(env, "ENOMEM", "door: out of memory");
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
  if (!args(env, info, 1, argv)) return fail(env, "EINVAL", "doorInit: expected a callback");
  if (!relay_running()) return fail(env, "ENATIVE", "doorInit: spliceInit was not called");
  if (door_ready) return fail(env, "EEXIST", "doorInit: already initialised");
  if (napi_create_reference(env, argv[0], 1, &door_cb) != napi_ok) return fail(env, "ENATIVE", "doorInit: cannot keep the callback");
  door_ready = 1;
  return NULL;
}

static napi_value door_listen(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int32_t fd, flags;
  int64_t hs;
  if (!args(env, info, 3, argv) || napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
      napi_get_value_int32(env, argv[1], &flags) != napi_ok || napi_get_value_int64(env, argv[2], &hs) != napi_ok || fd < 0)
    return fail(env, "EINVAL", "doorListen: expected (fd, flags, handshakeMs)");
  verdict *v = new_verdict(env, V_LISTEN);
  if (!v) return NULL;
  v->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (v->fd < 0) {
    int e = errno;
    free(v);
    return fail(env, e == EMFILE ? "EMFILE" : "EBADF", "doorListen: cannot duplicate the listening socket");
  }
  v->id = relay_new_id();
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
    return fail(env, "EINVAL", "doorConfigure: expected (id, flags, handshakeMs)");
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
  if (key) address_key(ss, key);
  return 1;
}

static napi_value door_approve(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  uint32_t id;
  if (!args(env, info, 2, argv) || napi_get_value_uint32(env, argv[0], &id) != napi_ok)
    return fail(env, "EINVAL", "doorApprove: expected (id, address)");
  verdict *v = new_verdict(env, V_APPROVE);
  if (!v) return NULL;
  v->id = id;
  if (!parse_address(env, argv[1], 0, &v->to, &v->tolen, v->key)) {
    free(v);
    return fail(env, "EINVAL", "doorApprove: not an IP address");
  }
  return post(env, v);
}

static napi_value door_id_call(napi_env env, napi_callback_info info, verdict_kind what, const char *usage) {
  napi_value argv[1];
  uint32_t id;
  if (!args(env, info, 1, argv) || napi_get_value_uint32(env, argv[0], &id) != napi_ok) return fail(env, "EINVAL", usage);
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
    return fail(env, "EINVAL", "doorReply: expected (connId, rep)");
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
    return fail(env, "EINVAL", "doorConnect: expected (connId, address, port, timeoutMs, idleMs, Float64Array(2), rememberMs)");
  verdict *v = new_verdict(env, V_CONNECT);
  if (!v) return NULL;
  v->id = id;
  if (!parse_address(env, argv[1], port, &v->to, &v->tolen, NULL)) {
    free(v);
    return fail(env, "EINVAL", "doorConnect: not an IP address");
  }
  v->timeout_ms = timeout;
  v->idle_ms = idle > 0 ? idle : 0;
  v->live = ta_data;
  v->remember_ms = remember > 0 ? remember : 0;
  return post(env, v);
}

static napi_value door_forget(napi_env env, napi_callback_info info) {
  return door_id_call(env, info, V_FORGET, "doorForget: expected a listener id");
}

static napi_value door_stats(napi_env env, napi_callback_info info) {
  static const char *const names[] = { "listeners", "handshakes", "accepted", "handedOff", "remembered" };
  const double values[] = { (double)n_listeners, (double)n_handshakes, (double)n_accepted, (double)n_handed_off, (double)n_remembered };
  return relay_figures(env, names, values, 5);
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
    { "doorStats", NULL, door_stats, NULL, NULL, NULL, napi_enumerable, NULL },
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
