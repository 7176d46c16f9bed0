/*
 * The accept path's listeners and handshakes, on the relay thread (door.h says how the door's
 * parts fit; door_binding.c describes the protocol with JavaScript). It takes only the path it
 * is sure of and hands everything else to JavaScript with the bytes read so far and the
 * descriptor:
 *   - a client whose address this listener has not approved yet (JavaScript approves a source
 *     after checking RELIABLE on its first connection; a reload forgets every approval);
 *   - a greeting or request door_wire.c does not take (stage 0: nothing answered yet; stage 1:
 *     the greeting was answered with "no authentication");
 *   - the end of the stream or an error during the handshake, and its deadline (stage 0/1);
 *   - a CONNECT that JavaScript decides to keep (a tap, an upstream route, shaping: stage 2).
 * Listeners, handshakes and dials are loop sources (loop.h); the deadlines and the freeing of
 * what ended are this client's sweep and bury. A connection that is dialed and replied to
 * becomes a splice tunnel (splice.h) under the same id.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
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

#include "door.h"
#include "hit.h"
#include "splice.h"

#define CONN_HASH 1024
#define ACCEPT_BATCH 64

enum { ST_GREETING, ST_REQUEST, ST_DECIDING, ST_CONNECTING };

typedef struct listener {
  loop_source src; /* listener_event */
  uint32_t id;
  int fd;
  int flags;
  int64_t handshake_ms;
  int64_t paused_until; /* after EMFILE: accept again from then */
  int closed;
  struct listener *next;
  door_memo memo;
} listener;

typedef struct conn conn;
typedef struct dial_ep {
  loop_source src; /* dial_event */
  conn *c;
} dial_ep;

struct conn {
  loop_source src; /* conn_event */
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
  door_record *announce; /* dialed on a remembered decision: its request record, sent with the dial's outcome */
  struct sockaddr_storage to; /* the address being dialed */
  socklen_t tolen;
  int64_t timeout_ms;
  char peer[INET6_ADDRSTRLEN];
  int peer_port;
  double accepted_ms; /* wall clock, for the session's start */
  uint8_t src_key[16]; /* the peer as the key of approved sources and remembered decisions */
  int dport;
  char host[256]; /* the request's destination */
  conn *hnext, *prev, *next, *dnext;
  uint8_t buf[DOOR_BUF];
};

static void (*deliver_record)(napi_env env, napi_value loop_cb, js_record *r);

/* Thread-owned state. */
static listener *listeners;
static listener *dead_listeners;
static conn *conns;
static conn *conn_graveyard;
static conn *by_id[CONN_HASH];

/* Figures for doorStats (relaxed). */
static volatile long n_listeners, n_handshakes, n_accepted, n_handed_off, n_remembered;

void door_figures(double out[5]) {
  out[0] = (double)n_listeners;
  out[1] = (double)n_handshakes;
  out[2] = (double)n_accepted;
  out[3] = (double)n_handed_off;
  out[4] = (double)n_remembered;
}

static door_record *record(int kind, conn *c) {
  door_record *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  r->head.deliver = deliver_record;
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

static listener *listener_find(uint32_t id) {
  for (listener *l = listeners; l; l = l->next)
    if (l->id == id) return l;
  return NULL;
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
    epoll_ctl(loop_epfd, EPOLL_CTL_DEL, c->sfd, NULL);
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
    epoll_ctl(loop_epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
  }
  conn_unlink(c);
}

/* JavaScript takes the client socket from here (stage 0, 1 or 2), with the bytes not consumed. */
static void handoff(conn *c, int stage, const char *reason) {
  drop_server(c);
  epoll_ctl(loop_epfd, EPOLL_CTL_DEL, c->fd, NULL);
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
  loop_post_js(&r->head);
}

/* The connection's first bytes are an HTTP request: the hit path (hit_machine.c) takes it over. */
static void to_hits(conn *c, listener *l) {
  epoll_ctl(loop_epfd, EPOLL_CTL_DEL, c->fd, NULL);
  int fd = c->fd;
  c->fd = -1;
  conn_unlink(c);
  hit_adopt(c->id, c->door, fd, c->buf, c->len, c->peer, c->peer_port, c->accepted_ms, c->src_key, l->handshake_ms, DOOR_IDLE_MS, NULL);
}

/*
 * A CONNECT JavaScript taps cache-first for HTTP (V_TAP_HTTP): the success reply now, as the
 * cache-first strategy gives it, and the tunnel's requests to the hit path; first_ms is how long
 * the client may take to send its first request before JavaScript's tap takes over.
 */
static void tap_http(conn *c, int64_t first_ms) {
  static const uint8_t ok[10] = { 5, 0, 0, 1, 0, 0, 0, 0, 0, 0 };
  if (write(c->fd, ok, sizeof ok) != (ssize_t)sizeof ok) {
    door_record *r = record(EV_GONE, c);
    if (r) r->reason = "client-gone";
    conn_close(c);
    if (r) loop_post_js(&r->head);
    return;
  }
  char where[262 + 8];
  snprintf(where, sizeof where, "%s:%d", c->host, c->dport);
  int fd = c->fd;
  c->fd = -1;
  conn_unlink(c);
  hit_adopt(c->id, c->door, fd, NULL, 0, c->peer, c->peer_port, c->accepted_ms, c->src_key, first_ms, DOOR_IDLE_MS, where);
}

static void dial_to(conn *c, const struct sockaddr_storage *to, socklen_t tolen, int64_t timeout_ms, int64_t idle_ms, double *live,
                    int64_t remember_ms);
static void dial_event(loop_source *src, uint32_t events);

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
  epoll_ctl(loop_epfd, EPOLL_CTL_DEL, c->fd, NULL);
  c->state = ST_DECIDING;
  snprintf(c->host, sizeof c->host, "%s", host);
  c->dport = port;
  snprintf(r->host, sizeof r->host, "%s", host);
  r->port = port;
  listener *l = listener_find(c->door);
  remembered *m = l ? memo_recall(&l->memo, c->src_key, c->host, c->dport, loop_now_ms()) : NULL;
  double *counts = m ? calloc(2, sizeof(double)) : NULL;
  if (!counts) {
    loop_post_js(&r->head);
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
    if (l && (l->flags & DOOR_HTTP_AUTO) && c->len > 0 && (c->buf[0] == 'G' || c->buf[0] == 'H')) {
      to_hits(c, l);
      return;
    }
    size_t used = 0;
    wire_result g = wire_greeting(c->buf, c->len, l && (l->flags & DOOR_NOAUTH), &used);
    if (g == WIRE_MORE) return;
    if (g == WIRE_HANDOFF) { handoff(c, 0, NULL); return; }
    static const uint8_t noauth[2] = { 5, 0 };
    c->req_off = used;
    c->state = ST_REQUEST;
    if (write(c->fd, noauth, 2) != 2) { handoff(c, 1, NULL); return; } /* JavaScript meets the error */
  }
  if (c->state != ST_REQUEST) return;
  char host[256];
  int port = 0;
  wire_result q = wire_connect(c->buf + c->req_off, c->len - c->req_off, host, &port);
  if (q == WIRE_MORE) return;
  if (q == WIRE_HANDOFF) { handoff(c, 1, NULL); return; }
  ask(c, host, port);
}

static void conn_readable(conn *c) {
  ssize_t n = read(c->fd, c->buf + c->len, DOOR_BUF - c->len);
  if (n > 0) {
    c->len += (size_t)n;
    parse(c, listener_find(c->door));
    if (!c->dead && c->len == DOOR_BUF) handoff(c, c->state == ST_GREETING ? 0 : 1, NULL); /* JavaScript refuses it */
    return;
  }
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  /* The end or an error mid-handshake: JavaScript answers it as its doors always did. */
  handoff(c, c->state == ST_GREETING ? 0 : 1, NULL);
}

static void conn_event(loop_source *src, uint32_t events) {
  (void)events;
  conn *c = (conn *)src;
  if (c->dead) return;
  if (c->state == ST_GREETING || c->state == ST_REQUEST) conn_readable(c);
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
        epoll_ctl(loop_epfd, EPOLL_CTL_MOD, l->fd, &ev);
        l->paused_until = loop_now_ms() + 250;
        door_record *r = record(EV_ACCEPT_ERROR, NULL);
        if (r) {
          r->door = l->id;
          r->reason = errno == EMFILE ? "EMFILE" : errno == ENFILE ? "ENFILE" : "ENOMEM";
          loop_post_js(&r->head);
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
    c->src.on_event = conn_event;
    c->dial.src.on_event = dial_event;
    c->dial.c = c;
    c->id = loop_new_id();
    c->door = l->id;
    c->fd = fd;
    c->sfd = -1;
    c->state = ST_GREETING;
    c->deadline = loop_now_ms() + l->handshake_ms;
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
    memo_address_key(&ss, c->src_key);
    if (!memo_approved(&l->memo, c->src_key)) {
      handoff(c, 0, NULL); /* JavaScript checks the source (RELIABLE) and may approve it */
      continue;
    }
    if (l->flags & DOOR_HTTP) {
      to_hits(c, l);
      continue;
    }
    struct epoll_event ev;
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.ptr = c;
    if (epoll_ctl(loop_epfd, EPOLL_CTL_ADD, fd, &ev) != 0) handoff(c, 0, NULL);
  }
}

static void listener_event(loop_source *src, uint32_t events) {
  (void)events;
  listener *l = (listener *)src;
  if (!l->closed) accept_some(l);
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
  loop_post_js(&c->announce->head);
  c->announce = NULL;
}

static void dial_failed(conn *c, int e) {
  if (c->announce) { /* a remembered decision gone stale: JavaScript decides again */
    listener *l = listener_find(c->door);
    if (l) memo_forget(&l->memo, c->src_key, c->host, c->dport);
  }
  announce(c);
  drop_server(c);
  c->state = ST_DECIDING;
  door_record *r = record(EV_FAILED, c);
  if (!r) {
    conn_close(c);
    return;
  }
  r->reason = errno_name(e);
  loop_post_js(&r->head);
}

static void gone(conn *c, const char *reason) {
  announce(c);
  door_record *r = record(EV_GONE, c);
  if (r) r->reason = reason;
  conn_close(c);
  if (r) loop_post_js(&r->head);
}

/* The server answered: reply to the client and make it a spliced tunnel. */
static void connected(conn *c) {
  announce(c);
  epoll_ctl(loop_epfd, EPOLL_CTL_DEL, c->sfd, NULL);
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
    gone(c, "client-gone");
    return;
  }
  if (c->remember_ms > 0) {
    listener *l = listener_find(c->door);
    if (l && !l->closed) {
      remembered d = { 0 };
      d.expires = loop_now_ms() + c->remember_ms;
      memcpy(d.src, c->src_key, 16);
      d.port = c->dport;
      d.host = c->host;
      d.to = c->to;
      d.tolen = c->tolen;
      d.timeout_ms = c->timeout_ms;
      d.idle_ms = c->idle_ms;
      memo_remember(&l->memo, &d);
    }
  }
  int cfd = c->fd, sfd = c->sfd;
  c->fd = c->sfd = -1;
  uint32_t id = c->id;
  int64_t idle = c->idle_ms;
  double *live = c->live;
  conn_unlink(c);
  loop_post_js(&r->head); /* before the tunnel can end: onDone comes through the same queue */
  splice_adopt(id, cfd, sfd, idle, live);
}

static void dial_event(loop_source *src, uint32_t events) {
  (void)events;
  conn *c = ((dial_ep *)src)->c;
  if (c->dead || c->state != ST_CONNECTING) return;
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(c->sfd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
  if (err == EINPROGRESS) return;
  if (err) dial_failed(c, err);
  else connected(c);
}

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
  c->deadline = timeout_ms > 0 ? loop_now_ms() + timeout_ms : INT64_MAX;
  struct epoll_event ev;
  ev.events = EPOLLOUT;
  ev.data.ptr = &c->dial;
  if (epoll_ctl(loop_epfd, EPOLL_CTL_ADD, c->sfd, &ev) != 0) dial_failed(c, errno);
}

/* ---- listeners and verdicts ---- */

static void listener_close(listener *l) {
  if (l->closed) return;
  l->closed = 1;
  epoll_ctl(loop_epfd, EPOLL_CTL_DEL, l->fd, NULL);
  close(l->fd);
  listener **p = &listeners;
  while (*p && *p != l) p = &(*p)->next;
  if (*p) *p = l->next;
  l->next = dead_listeners;
  dead_listeners = l;
  __sync_fetch_and_sub(&n_listeners, 1);
}

static void listener_open(verdict *v) {
  listener *l = calloc(1, sizeof *l);
  if (!l) {
    close(v->fd);
    return;
  }
  l->src.on_event = listener_event;
  l->id = v->id;
  l->fd = v->fd;
  l->flags = v->flags;
  l->handshake_ms = v->timeout_ms;
  l->next = listeners;
  listeners = l;
  __sync_fetch_and_add(&n_listeners, 1);
  struct epoll_event ev;
  ev.events = EPOLLIN;
  ev.data.ptr = l;
  epoll_ctl(loop_epfd, EPOLL_CTL_ADD, l->fd, &ev);
}

void door_apply(void *arg) {
  verdict *v = arg;
  listener *l;
  conn *c;
  switch (v->what) {
    case V_LISTEN:
      listener_open(v);
      break;
    case V_CONFIGURE:
      if ((l = listener_find(v->id))) {
        l->flags = v->flags;
        l->handshake_ms = v->timeout_ms;
        memo_forget_approved(&l->memo);
        memo_forget_all(&l->memo);
        hit_table_revoke(l->id);
      }
      break;
    case V_FORGET:
      if ((l = listener_find(v->id))) {
        memo_forget_all(&l->memo);
        hit_table_revoke(l->id);
      }
      break;
    case V_APPROVE:
      if ((l = listener_find(v->id))) memo_approve(&l->memo, v->key);
      break;
    case V_CLOSE:
      if ((l = listener_find(v->id))) {
        listener_close(l);
        hit_table_revoke(l->id);
      }
      break;
    case V_ABORT:
      if ((c = conn_find(v->id))) conn_close(c);
      else if (!hit_abort(v->id)) splice_abort_tunnel(v->id);
      break;
    default:
      c = conn_find(v->id);
      if (!c || c->state != ST_DECIDING) break; /* aborted meanwhile */
      if (v->what == V_CONNECT) dial_to(c, &v->to, v->tolen, v->timeout_ms, v->idle_ms, v->live, v->remember_ms);
      else if (v->what == V_TAKE) handoff(c, 2, NULL);
      else if (v->what == V_TAP_HTTP) tap_http(c, v->timeout_ms);
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

/* ---- the loop's hooks ---- */

static void sweep(int64_t now) {
  for (listener *l = listeners; l; l = l->next) {
    if (l->paused_until && now >= l->paused_until) {
      l->paused_until = 0;
      struct epoll_event ev;
      ev.events = EPOLLIN;
      ev.data.ptr = l;
      epoll_ctl(loop_epfd, EPOLL_CTL_MOD, l->fd, &ev);
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

static void bury(void) {
  while (conn_graveyard) {
    conn *c = conn_graveyard;
    conn_graveyard = c->dnext;
    free(c);
  }
  while (dead_listeners) {
    listener *l = dead_listeners;
    dead_listeners = l->next;
    memo_forget_approved(&l->memo);
    memo_forget_all(&l->memo);
    free(l);
  }
}

static loop_client door_client = { NULL, sweep, bury, NULL };

void door_machine_init(void (*deliver)(napi_env env, napi_value loop_cb, js_record *r)) {
  deliver_record = deliver;
  loop_add_client(&door_client);
}
