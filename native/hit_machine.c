/*
 * The native hit path's connections, on the relay thread (hit.h says how its parts fit). The door
 * (door_machine.c) hands over a connection whose first bytes are an HTTP request; from then on:
 *   read a request head → hit_wire.c takes it → hit_table.c has a grant for (door, source, target)
 *   → write the object's head with Age for now, and its body unless HEAD, in one writev (a body
 *   of HIT_SENDFILE_MIN or more: the head with MSG_MORE, then sendfile from its memfd); the
 *   client's back-pressure holds (EPOLLOUT), and the next request is read only once the response
 *   is written. The hit is reported to JavaScript in a batch per loop turn (EV_HITS: its
 *   access.log record, the session's counts, the entry's recency).
 * Anything else goes to JavaScript at a request boundary with every byte read (EV_HANDOFF) and
 * stays there: a request this path does not take, one without a grant, a head longer than
 * HIT_BUF, the end of the stream or a deadline with part of a request read, a connection that
 * never sent a request. Stage 0 when no hit was served (JavaScript accepts it as a new
 * connection), stage 3 when some were (JavaScript's session for it exists, from the hits).
 * A keep-alive connection idle for IDLE_MS after a response is closed, as Node's server does.
 * A SOCKS5 tunnel that JavaScript tapped cache-first (door_machine.c, V_TAP_HTTP) is served the
 * same way, its requests origin-form; it goes to JavaScript at stage 4 (the SOCKS5 reply sent).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "door.h"
#include "hit.h"

#define CONN_HASH 1024
#define WRITE_STALL_MS 60000 /* a client that reads nothing of a response for this long is closed */
#define BATCH_FLUSH 65536    /* a batch this big goes to JavaScript before the loop turn ends */

typedef struct hconn hconn;
struct hconn {
  loop_source src; /* hconn_event */
  uint32_t id, door;
  int fd;
  int dead;
  int announced; /* a hit was reported: JavaScript has a session for it */
  uint32_t events; /* what epoll watches for it now */
  int64_t deadline;
  int64_t head_ms, idle_ms;
  double up, down;
  char peer[INET6_ADDRSTRLEN];
  int peer_port;
  double accepted_ms;
  uint8_t src_key[16];
  /* the response being written */
  hit_object *obj;
  struct iovec iov[4];
  int iovcnt;
  size_t out_bytes;
  off_t file_off; /* a memfd body: what is left of it to send after the iovecs */
  size_t file_left;
  double started_ms;
  hit_request req; /* pointers into buf, valid until the response is written */
  char age[24];
  long served;       /* responses written */
  int tunnel;        /* a SOCKS5 tunnel's connection: origin-form requests, keys "T host:port HOST PATH" */
  size_t nprefix;    /* "T host:port " */
  char prefix[2 + 262 + 1];
  char key[5 + 2 + 262 + 256 + 1 + 2048 + 8]; /* the grant's name for the request being read */
  hconn *hnext, *prev, *next, *dnext;
  size_t len;
  uint8_t buf[HIT_BUF];
};

static void (*deliver_record)(napi_env env, napi_value loop_cb, js_record *r);
static hconn *conns, *graveyard, *by_id[CONN_HASH];
static uint8_t *batch;
static size_t batch_len, batch_cap;
static volatile long n_served, n_handed_off, n_conns;

void hit_figures(double out[5]) {
  out[0] = (double)n_served;
  out[1] = (double)n_handed_off;
  out[2] = (double)n_conns;
  out[3] = (double)hit_table_objects;
  out[4] = (double)hit_table_bytes;
}

static double wall_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_REALTIME, &t);
  return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static hit_record *record(int kind, hconn *c) {
  hit_record *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  r->head.deliver = deliver_record;
  r->kind = kind;
  r->fd = -1;
  r->id = c->id;
  r->door = c->door;
  r->counts[0] = c->up;
  r->counts[1] = c->down;
  memcpy(r->peer, c->peer, sizeof r->peer);
  r->peer_port = c->peer_port;
  r->accepted_ms = c->accepted_ms;
  return r;
}

/* ---- the batch of hits ---- */

static void flush_batch(void) {
  if (batch_len == 0) return;
  hit_record *r = calloc(1, sizeof *r);
  if (!r) {
    batch_len = 0; /* the records are lost, the hits were served */
    return;
  }
  r->head.deliver = deliver_record;
  r->kind = EV_HITS;
  r->fd = -1;
  r->bytes = batch;
  r->nbytes = batch_len;
  batch = NULL;
  batch_len = batch_cap = 0;
  loop_post_js(&r->head);
}

static int put(const void *p, size_t n) {
  if (batch_len + n > batch_cap) {
    size_t cap = batch_cap ? batch_cap * 2 : 4096;
    while (cap < batch_len + n) cap *= 2;
    uint8_t *b = realloc(batch, cap);
    if (!b) return 0;
    batch = b;
    batch_cap = cap;
  }
  memcpy(batch + batch_len, p, n);
  batch_len += n;
  return 1;
}

/*
 * One hit, packed (native byte order): u32 id, u32 door, u32 handle, u16 status, u8 head, u8 first,
 * u32 bytes, f64 time, f64 elapsed, u16 ua length, u16 referer length; then, when first,
 * u8 peer length, the peer, u16 peer port, f64 accepted; then the User-Agent and Referer bytes.
 */
static void report(hconn *c) {
  size_t nua = c->req.nua > 1024 ? 1024 : c->req.nua, nref = c->req.nreferer > 1024 ? 1024 : c->req.nreferer;
  uint8_t first = !c->announced, head = (uint8_t)c->req.head;
  uint16_t status = (uint16_t)c->obj->status, lua = (uint16_t)nua, lref = (uint16_t)nref;
  uint32_t bytes = (uint32_t)c->out_bytes;
  double now = wall_ms(), elapsed = now - c->started_ms;
  int ok = put(&c->id, 4) && put(&c->door, 4) && put(&c->obj->handle, 4) && put(&status, 2) && put(&head, 1) && put(&first, 1) && put(&bytes, 4) &&
           put(&now, 8) && put(&elapsed, 8) && put(&lua, 2) && put(&lref, 2);
  if (ok && first) {
    uint8_t np = (uint8_t)strlen(c->peer);
    uint16_t pp = (uint16_t)c->peer_port;
    ok = put(&np, 1) && put(c->peer, np) && put(&pp, 2) && put(&c->accepted_ms, 8);
  }
  if (ok && nua) ok = put(c->req.ua, nua);
  if (ok && nref) ok = put(c->req.referer, nref);
  if (!ok) return; /* out of memory: this record is lost */
  c->announced = 1;
  if (batch_len >= BATCH_FLUSH) flush_batch();
}

/* ---- connections ---- */

static void unlink_conn(hconn *c) {
  hconn **p = &by_id[c->id % CONN_HASH];
  while (*p && *p != c) p = &(*p)->hnext;
  if (*p) *p = c->hnext;
  if (c->prev) c->prev->next = c->next;
  else conns = c->next;
  if (c->next) c->next->prev = c->prev;
  if (c->obj) {
    hit_object_release(c->obj);
    c->obj = NULL;
  }
  c->dead = 1;
  c->dnext = graveyard;
  graveyard = c;
  __sync_fetch_and_sub(&n_conns, 1);
}

/* The connection is over here; JavaScript hears of it only if it has a session for it. */
static void finish(hconn *c, const char *reason) {
  hit_record *r = c->announced ? record(EV_HTTP_END, c) : NULL;
  if (r) r->reason = reason;
  epoll_ctl(loop_epfd, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  c->fd = -1;
  unlink_conn(c);
  if (r) {
    flush_batch(); /* its hits before its end */
    loop_post_js(&r->head);
  }
}

/* JavaScript's HTTP door takes the connection, at a request boundary, with the bytes read. */
static void handoff(hconn *c, const char *reason) {
  epoll_ctl(loop_epfd, EPOLL_CTL_DEL, c->fd, NULL);
  hit_record *r = record(EV_HANDOFF, c);
  uint8_t *bytes = c->len ? malloc(c->len) : NULL;
  if (!r || (c->len && !bytes)) {
    free(r);
    free(bytes);
    finish(c, "ENOMEM");
    return;
  }
  if (bytes) memcpy(bytes, c->buf, c->len);
  r->fd = c->fd;
  r->stage = c->tunnel ? 4 : c->announced ? 3 : 0;
  r->reason = reason;
  r->bytes = bytes;
  r->nbytes = c->len;
  c->fd = -1;
  unlink_conn(c);
  __sync_fetch_and_add(&n_handed_off, 1);
  flush_batch();
  loop_post_js(&r->head);
}

static void watch(hconn *c, uint32_t events) {
  if (c->events == events) return; /* one epoll_ctl per change, not per response */
  c->events = events;
  struct epoll_event ev;
  ev.events = events;
  ev.data.ptr = c;
  epoll_ctl(loop_epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

static void process(hconn *c);

/* Write what is left of the response; on the last byte, report it and read on. */
static void write_more(hconn *c) {
  while (c->iovcnt > 0) {
    /* MSG_MORE when a memfd body follows: the head goes out with the body's first bytes. */
    struct msghdr m = { 0 };
    m.msg_iov = c->iov;
    m.msg_iovlen = (size_t)c->iovcnt;
    ssize_t n = sendmsg(c->fd, &m, MSG_NOSIGNAL | (c->file_left ? MSG_MORE : 0));
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        c->deadline = loop_now_ms() + WRITE_STALL_MS;
        watch(c, EPOLLOUT); /* not RDHUP: a half-closed client that still reads must not spin the loop */
        return;
      }
      finish(c, "client-gone");
      return;
    }
    c->down += (double)n;
    size_t left = (size_t)n;
    while (c->iovcnt > 0 && left >= c->iov[0].iov_len) {
      left -= c->iov[0].iov_len;
      memmove(c->iov, c->iov + 1, (size_t)(c->iovcnt - 1) * sizeof c->iov[0]);
      c->iovcnt--;
    }
    if (c->iovcnt > 0) {
      c->iov[0].iov_base = (uint8_t *)c->iov[0].iov_base + left;
      c->iov[0].iov_len -= left;
    }
  }
  while (c->file_left > 0) {
    ssize_t n = sendfile(c->fd, c->obj->body_fd, &c->file_off, c->file_left);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        c->deadline = loop_now_ms() + WRITE_STALL_MS;
        watch(c, EPOLLOUT);
        return;
      }
      finish(c, "client-gone");
      return;
    }
    if (n == 0) { /* the memfd is shorter than it was: never, but never spin */
      finish(c, "EIO");
      return;
    }
    c->down += (double)n;
    c->file_left -= (size_t)n;
  }
  __sync_fetch_and_add(&n_served, 1);
  c->served++;
  report(c);
  hit_object_release(c->obj);
  c->obj = NULL;
  size_t used = c->req.length;
  c->up += (double)used;
  memmove(c->buf, c->buf + used, c->len - used);
  c->len -= used;
  watch(c, EPOLLIN | EPOLLRDHUP);
  process(c);
}

static void serve(hconn *c, hit_object *obj) {
  double now = wall_ms();
  double age = floor((now - obj->age_origin) / 1000.0);
  int na = snprintf(c->age, sizeof c->age, "%lld", age > 0 ? (long long)age : 0LL);
  c->obj = obj;
  c->started_ms = now;
  c->iov[0] = (struct iovec){ obj->pre, obj->npre };
  c->iov[1] = (struct iovec){ c->age, (size_t)na };
  c->iov[2] = (struct iovec){ obj->post, obj->npost };
  c->iovcnt = 3;
  c->file_off = 0;
  c->file_left = 0;
  if (!c->req.head && obj->nbody > 0) {
    if (obj->body_fd >= 0) c->file_left = obj->nbody;
    else c->iov[c->iovcnt++] = (struct iovec){ obj->body, obj->nbody };
  }
  c->out_bytes = c->file_left;
  for (int i = 0; i < c->iovcnt; i++) c->out_bytes += c->iov[i].iov_len;
  write_more(c);
}

/* Serve the requests read so far; return when more bytes are needed or the connection moved on. */
static void process(hconn *c) {
  if (c->dead || c->obj) return;
  if (c->len == 0) {
    c->deadline = loop_now_ms() + (c->served > 0 ? c->idle_ms : c->head_ms);
    return;
  }
  hit_parse_result q = hit_parse(c->buf, c->len, c->tunnel, &c->req);
  if (q == HP_MORE) {
    if (c->len == HIT_BUF) handoff(c, NULL); /* JavaScript answers the long head */
    else if (c->deadline == 0) c->deadline = loop_now_ms() + c->head_ms;
    return;
  }
  if (q == HP_HANDOFF) {
    handoff(c, NULL);
    return;
  }
  /* The grant's name (hit.h): "HEAD " for a HEAD (a rule may refuse one method and not the
   * other), the tunnel's "T host:port HOST " (hit_wire.c bounds the Host), the target as sent. */
  size_t n = 0;
  if (c->req.head) {
    memcpy(c->key, "HEAD ", 5);
    n = 5;
  }
  if (c->tunnel) {
    memcpy(c->key + n, c->prefix, c->nprefix);
    n += c->nprefix;
    memcpy(c->key + n, c->req.host, c->req.nhost);
    n += c->req.nhost;
    c->key[n++] = ' ';
  }
  memcpy(c->key + n, c->req.target, c->req.ntarget);
  n += c->req.ntarget;
  const char *target = c->key;
  size_t ntarget = n;
  hit_object *obj = hit_table_find(c->door, c->src_key, target, ntarget, (int64_t)wall_ms());
  if (!obj) {
    handoff(c, NULL);
    return;
  }
  c->deadline = 0;
  serve(c, obj);
}

static void readable(hconn *c) {
  if (c->len == HIT_BUF) {
    handoff(c, NULL);
    return;
  }
  ssize_t n = read(c->fd, c->buf + c->len, HIT_BUF - c->len);
  if (n > 0) {
    if (c->len == 0) c->deadline = 0; /* a new request: its head's deadline starts */
    c->len += (size_t)n;
    process(c);
    return;
  }
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  /* The end or an error: between requests, after hits, the connection is over; otherwise
   * JavaScript's door meets it as it always did. */
  if (c->len == 0 && c->announced) finish(c, n == 0 ? NULL : "client-gone");
  else handoff(c, NULL);
}

static void hconn_event(loop_source *src, uint32_t events) {
  hconn *c = (hconn *)src;
  if (c->dead) return;
  if (c->obj) {
    if (events & (EPOLLERR | EPOLLHUP)) finish(c, "client-gone");
    else if (events & EPOLLOUT) write_more(c);
    return;
  }
  readable(c);
}

void hit_adopt(uint32_t id, uint32_t door, int fd, const uint8_t *bytes, size_t n, const char *peer, int peer_port, double accepted_ms,
               const uint8_t src_key[16], int64_t head_ms, int64_t idle_ms, const char *tunnel) {
  hconn *c = malloc(sizeof *c);
  if (!c) {
    close(fd);
    return;
  }
  memset(c, 0, offsetof(hconn, buf));
  c->src.on_event = hconn_event;
  c->id = id;
  c->door = door;
  c->fd = fd;
  c->head_ms = head_ms > 0 ? head_ms : 10000;
  c->idle_ms = idle_ms > 0 ? idle_ms : 5000;
  snprintf(c->peer, sizeof c->peer, "%s", peer);
  c->peer_port = peer_port;
  c->accepted_ms = accepted_ms;
  memcpy(c->src_key, src_key, 16);
  if (tunnel) {
    c->tunnel = 1;
    c->announced = 1; /* its session is JavaScript's from the CONNECT */
    int np = snprintf(c->prefix, sizeof c->prefix, "T %s ", tunnel);
    c->nprefix = np > 0 && (size_t)np < sizeof c->prefix ? (size_t)np : 0;
  }
  if (n > HIT_BUF) n = HIT_BUF;
  memcpy(c->buf, bytes, n);
  c->len = n;
  c->hnext = by_id[id % CONN_HASH];
  by_id[id % CONN_HASH] = c;
  c->next = conns;
  if (conns) conns->prev = c;
  conns = c;
  __sync_fetch_and_add(&n_conns, 1);
  c->deadline = loop_now_ms() + c->head_ms;
  struct epoll_event ev;
  ev.events = c->events = EPOLLIN | EPOLLRDHUP;
  ev.data.ptr = c;
  if (epoll_ctl(loop_epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
    /* handoff() removes it from the set, which it is not in: harmless */
    handoff(c, NULL);
    return;
  }
  process(c);
}

int hit_abort(uint32_t id) {
  for (hconn *c = by_id[id % CONN_HASH]; c; c = c->hnext)
    if (c->id == id && !c->dead) {
      finish(c, "aborted");
      return 1;
    }
  return 0;
}

/* ---- the loop's hooks ---- */

static int drain(void) {
  flush_batch();
  return 0;
}

static void sweep(int64_t now) {
  hit_table_sweep((int64_t)wall_ms());
  hconn *c = conns;
  while (c) {
    hconn *next = c->next;
    if (c->deadline && now >= c->deadline) {
      if (c->obj) finish(c, "write-timeout");
      else if (c->tunnel) handoff(c, NULL); /* the tap's own timers take it from here */
      else if (c->len == 0 && c->announced) finish(c, NULL); /* keep-alive idle, as Node's server */
      else handoff(c, NULL); /* JavaScript's server applies its own head timer from here */
    }
    c = next;
  }
}

static void bury(void) {
  while (graveyard) {
    hconn *c = graveyard;
    graveyard = c->dnext;
    free(c);
  }
}

static loop_client hit_client = { drain, sweep, bury, NULL };

void hit_machine_init(void (*deliver)(napi_env env, napi_value loop_cb, js_record *r)) {
  deliver_record = deliver;
  loop_add_client(&hit_client);
}
