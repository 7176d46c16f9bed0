/*
 * The splice relay: untapped, unshaped tunnels moved by one native thread with splice(2), so the
 * bytes never enter JavaScript (src/net/splice.ts decides which tunnels qualify and owns the
 * JavaScript side; docs/performance.md explains the design).
 *
 *   spliceInit(onDone)                       -> undefined   once; onDone(id, up, down, result)
 *   spliceStart(clientFd, serverFd, idleMs, counts)
 *                                            -> id          dup()s both fds, the thread relays;
 *                                                           counts (Float64Array(2)) shows up/down live
 *   spliceAbort(id)                          -> undefined   end a tunnel now (result "aborted")
 *   spliceStats()                            -> { tunnels, pipes, started, ended }
 *
 * Ownership: spliceStart duplicates both descriptors; JavaScript then closes its own (libuv's
 * handles), so the thread holds the only ones and closes them when the tunnel ends (after an
 * error with SO_LINGER 0, so the peers see a reset rather than a clean end).
 *
 * Per direction: read from the source socket into an empty pipe (at most PIPE_SIZE bytes), then
 * splice the pipe to the destination until it is empty; only then read again. So a direction
 * never buffers more than one pipe, a slow receiver stops the sender (back-pressure), and pipes
 * are taken from a small pool only while bytes are in flight: an idle tunnel holds two
 * descriptors and no pipe. A source's EOF is forwarded with shutdown(SHUT_WR) once its pipe is
 * empty (half-close); the tunnel ends when both directions are shut, at the first error (its
 * errno name is the result), after idleMs with no byte either way ("idle"), or on spliceAbort.
 * Bytes are counted when they reach the destination.
 *
 * The tunnels are one client of the relay thread's loop (loop.c): each endpoint is a loop_source,
 * and the run queue, idle sweep and graveyard are the client's drain, sweep and bury hooks.
 */
#define _GNU_SOURCE
#include "splice.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "loop.h"

#define PIPE_SIZE (256 * 1024)
#define POOL_KEEP 64
/* Rounds one direction may run per wake-up before others get their turn. */
#define ROUND_BUDGET 16

typedef struct tunnel tunnel;

typedef struct endpoint {
  loop_source src; /* tunnel_event */
  tunnel *t;
  int side; /* 0 = client, 1 = server */
} endpoint;

typedef struct direction {
  int src, dst;        /* indexes into t->fd */
  int pr, pw;          /* pipe, or -1 */
  size_t inpipe;       /* bytes in the pipe */
  uint64_t bytes;      /* delivered to dst */
  int eof, shut;
} direction;

struct tunnel {
  uint32_t id;
  int fd[2];
  endpoint ep[2];
  direction dir[2]; /* 0 = up (client -> server), 1 = down */
  int64_t idle_ms;
  int64_t last_ms;
  double *live; /* JavaScript's Float64Array [up, down], kept alive there until onDone */
  int queued;   /* on the run queue (budget used up) */
  int done;
  tunnel *dnext;  /* graveyard: freed at the end of the loop iteration */
  const char *result;
  tunnel *prev, *next; /* live list */
  tunnel *rnext;       /* run queue */
};

typedef struct done_record {
  js_record head;
  uint32_t id;
  double up, down;
  const char *result;
} done_record;

/* Thread-owned state. */
static tunnel *live;
static tunnel *runq;
/* Ended tunnels, freed once no event of the current batch can point at them any more. */
static tunnel *graveyard;
static int pool[POOL_KEEP][2];
static int pool_n;

/* Counters read by spliceStats (relaxed: figures for the dashboard and tests). */
static volatile long n_tunnels, n_pipes, n_started, n_ended;

#define now_ms loop_now_ms
#define epfd loop_epfd

static const char *errno_result(int e) {
  switch (e) {
    case ECONNRESET: return "ECONNRESET";
    case EPIPE: return "EPIPE";
    case ETIMEDOUT: return "ETIMEDOUT";
    case EHOSTUNREACH: return "EHOSTUNREACH";
    case ENETUNREACH: return "ENETUNREACH";
    case ECONNABORTED: return "ECONNABORTED";
    case ENOMEM: return "ENOMEM";
    case EMFILE: return "EMFILE";
    case ENFILE: return "ENFILE";
    default: return "EUPSTREAM";
  }
}

static int pipe_get(direction *d) {
  if (pool_n > 0) {
    pool_n--;
    d->pr = pool[pool_n][0];
    d->pw = pool[pool_n][1];
    return 0;
  }
  int p[2];
  if (pipe2(p, O_NONBLOCK | O_CLOEXEC) != 0) return -1;
  (void)fcntl(p[1], F_SETPIPE_SZ, PIPE_SIZE); /* best effort: 64 KiB otherwise */
  d->pr = p[0];
  d->pw = p[1];
  __sync_fetch_and_add(&n_pipes, 1);
  return 0;
}

static void pipe_put(direction *d) {
  if (d->pr < 0) return;
  if (d->inpipe == 0 && pool_n < POOL_KEEP) {
    pool[pool_n][0] = d->pr;
    pool[pool_n][1] = d->pw;
    pool_n++;
  } else {
    close(d->pr);
    close(d->pw);
    __sync_fetch_and_sub(&n_pipes, 1);
  }
  d->pr = d->pw = -1;
  d->inpipe = 0;
}

static void deliver_done(napi_env env, napi_value js_cb, js_record *rec);

static void post_done(tunnel *t) {
  done_record *r = malloc(sizeof *r);
  if (!r) return;
  r->head.deliver = deliver_done;
  r->id = t->id;
  r->up = (double)t->dir[0].bytes;
  r->down = (double)t->dir[1].bytes;
  r->result = t->result;
  loop_post_js(&r->head);
}

static void finish(tunnel *t, const char *result) {
  if (t->done) return;
  t->done = 1;
  if (!t->result) t->result = result;
  int clean = strcmp(t->result, "ok") == 0 || strcmp(t->result, "idle") == 0 || strcmp(t->result, "aborted") == 0;
  for (int i = 0; i < 2; i++) {
    epoll_ctl(epfd, EPOLL_CTL_DEL, t->fd[i], NULL);
    if (!clean) {
      struct linger lg = { 1, 0 };
      setsockopt(t->fd[i], SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    close(t->fd[i]);
    pipe_put(&t->dir[i]);
  }
  if (t->prev) t->prev->next = t->next;
  else live = t->next;
  if (t->next) t->next->prev = t->prev;
  __sync_fetch_and_sub(&n_tunnels, 1);
  __sync_fetch_and_add(&n_ended, 1);
  post_done(t);
  /* A queued tunnel is freed by run_queue(); any other at the end of this loop iteration. */
  if (!t->queued) {
    t->dnext = graveyard;
    graveyard = t;
  }
}

static void bury(void) {
  while (graveyard) {
    tunnel *t = graveyard;
    graveyard = t->dnext;
    free(t);
  }
}

/* Move what can move now in one direction. Returns 0, 1 = budget used up, -errno on error. */
static int pump(tunnel *t, direction *d) {
  int src = t->fd[d->src], dst = t->fd[d->dst];
  for (int round = 0; round < ROUND_BUDGET; round++) {
    if (d->inpipe > 0) {
      ssize_t n = splice(d->pr, NULL, dst, NULL, d->inpipe, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) return 0; /* dst full: EPOLLOUT wakes us */
        return -errno;
      }
      d->inpipe -= (size_t)n;
      d->bytes += (uint64_t)n;
      if (t->live) t->live[d == &t->dir[0] ? 0 : 1] = (double)d->bytes;
      t->last_ms = now_ms();
      continue;
    }
    if (d->eof) {
      if (!d->shut) {
        d->shut = 1;
        if (shutdown(dst, SHUT_WR) != 0 && errno != ENOTCONN) return -errno;
      }
      pipe_put(d);
      return 0;
    }
    if (d->pr < 0 && pipe_get(d) != 0) return -errno;
    ssize_t n = splice(src, NULL, d->pw, NULL, PIPE_SIZE, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n > 0) {
      d->inpipe = (size_t)n;
      t->last_ms = now_ms();
      continue;
    }
    if (n == 0) {
      d->eof = 1;
      continue;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN) {
      pipe_put(d); /* empty: back to the pool while the source is quiet */
      return 0;
    }
    return -errno;
  }
  return 1;
}

/* Both directions of a tunnel; ends it when both are shut or on an error. */
static void service(tunnel *t) {
  int again = 0;
  for (int i = 0; i < 2 && !t->done; i++) {
    int r = pump(t, &t->dir[i]);
    if (r < 0) {
      finish(t, errno_result(-r));
      return;
    }
    if (r == 1) again = 1;
  }
  if (t->done) return;
  if (t->dir[0].shut && t->dir[1].shut) {
    finish(t, "ok");
    return;
  }
  if (again && !t->queued) {
    t->queued = 1;
    t->rnext = runq;
    runq = t;
  }
}

static void run_queue(void) {
  tunnel *q = runq;
  runq = NULL;
  while (q) {
    tunnel *t = q;
    q = q->rnext;
    t->queued = 0;
    if (t->done) free(t);
    else service(t);
  }
}

static void add_tunnel(tunnel *t) {
  t->prev = NULL;
  t->next = live;
  if (live) live->prev = t;
  live = t;
  t->last_ms = now_ms();
  for (int i = 0; i < 2; i++) {
    struct epoll_event ev;
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.ptr = &t->ep[i];
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, t->fd[i], &ev) != 0) {
      int e = errno;
      if (i == 1) epoll_ctl(epfd, EPOLL_CTL_DEL, t->fd[0], NULL);
      /* fds are closed by finish(); both DELs are harmless on an fd not added */
      finish(t, errno_result(e));
      return;
    }
  }
  service(t); /* edge-triggered: move what is already there */
}

static void sweep_idle(int64_t now) {
  tunnel *t = live;
  while (t) {
    tunnel *next = t->next;
    if (t->idle_ms > 0 && now - t->last_ms >= t->idle_ms) finish(t, "idle");
    t = next;
  }
}

/* The events of one endpoint. */
static void tunnel_event(loop_source *src, uint32_t events) {
  endpoint *ep = (endpoint *)src;
  tunnel *t = ep->t;
  if (t->done) return;
  if (events & EPOLLERR) {
    /* A reset or other socket error: it may never show in a read or write that is not made. */
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(t->fd[ep->side], SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err != 0) {
      finish(t, errno_result(err));
      return;
    }
  }
  service(t);
}

static int drain(void) {
  run_queue();
  return runq != NULL;
}

static loop_client splice_client = { drain, sweep_idle, bury, NULL };

/* ---- JavaScript side ---- */

static void deliver_done(napi_env env, napi_value js_cb, js_record *rec) {
  done_record *r = (done_record *)rec;
  if (env && js_cb) {
    napi_value argv[4], undef;
    napi_create_uint32(env, r->id, &argv[0]);
    napi_create_double(env, r->up, &argv[1]);
    napi_create_double(env, r->down, &argv[2]);
    napi_create_string_utf8(env, r->result, NAPI_AUTO_LENGTH, &argv[3]);
    napi_get_undefined(env, &undef);
    napi_call_function(env, undef, js_cb, 4, argv, NULL);
  }
  free(r);
}

static napi_value splice_init(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1)
    return loop_throw(env, "EINVAL", "spliceInit: expected a callback");
  if (loop_running()) return loop_throw(env, "EEXIST", "spliceInit: already initialised");
  loop_add_client(&splice_client);
  if (loop_start(env, argv[0]) != 0) return NULL;
  return NULL;
}

/* A new tunnel's fields; the caller has set t->fd[]. */
static void tunnel_init(tunnel *t, uint32_t id, int64_t idle, double *live) {
  t->id = id;
  t->idle_ms = idle > 0 ? idle : 0;
  t->live = live;
  for (int i = 0; i < 2; i++) {
    t->ep[i].src.on_event = tunnel_event;
    t->ep[i].t = t;
    t->ep[i].side = i;
    t->dir[i].pr = t->dir[i].pw = -1;
  }
  t->dir[0].src = 0;
  t->dir[0].dst = 1;
  t->dir[1].src = 1;
  t->dir[1].dst = 0;
}

void splice_adopt(uint32_t id, int cfd, int sfd, int64_t idle_ms, double *live) {
  tunnel *t = calloc(1, sizeof *t);
  if (!t) {
    close(cfd);
    close(sfd);
    return;
  }
  t->fd[0] = cfd;
  t->fd[1] = sfd;
  tunnel_init(t, id, idle_ms, live);
  __sync_fetch_and_add(&n_tunnels, 1);
  __sync_fetch_and_add(&n_started, 1);
  add_tunnel(t);
}

int splice_abort_tunnel(uint32_t id) {
  for (tunnel *t = live; t; t = t->next) {
    if (t->id == id) {
      finish(t, "aborted");
      return 1;
    }
  }
  return 0;
}

/* On the relay thread: a tunnel spliceStart made. */
static void add_posted(void *arg) {
  add_tunnel(arg);
}

static void abort_posted(void *arg) {
  splice_abort_tunnel((uint32_t)(uintptr_t)arg);
}

static napi_value splice_start(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  int32_t cfd, sfd;
  int64_t idle;
  napi_typedarray_type ta_type;
  size_t ta_len = 0;
  void *ta_data = NULL;
  if (!loop_running()) return loop_throw(env, "ENATIVE", "spliceStart: spliceInit was not called");
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 4 ||
      napi_get_value_int32(env, argv[0], &cfd) != napi_ok || napi_get_value_int32(env, argv[1], &sfd) != napi_ok ||
      napi_get_value_int64(env, argv[2], &idle) != napi_ok || cfd < 0 || sfd < 0 ||
      napi_get_typedarray_info(env, argv[3], &ta_type, &ta_len, &ta_data, NULL, NULL) != napi_ok ||
      ta_type != napi_float64_array || ta_len < 2)
    return loop_throw(env, "EINVAL", "spliceStart: expected (clientFd, serverFd, idleMs, Float64Array(2))");
  tunnel *t = calloc(1, sizeof *t);
  if (!t) return loop_throw(env, "ENOMEM", "spliceStart: out of memory");
  t->fd[0] = fcntl(cfd, F_DUPFD_CLOEXEC, 0);
  t->fd[1] = t->fd[0] < 0 ? -1 : fcntl(sfd, F_DUPFD_CLOEXEC, 0);
  if (t->fd[0] < 0 || t->fd[1] < 0) {
    int e = errno;
    if (t->fd[0] >= 0) close(t->fd[0]);
    free(t);
    return loop_throw(env, e == EMFILE ? "EMFILE" : e == ENFILE ? "ENFILE" : "EBADF", "spliceStart: cannot duplicate the descriptors");
  }
  uint32_t tid = loop_new_id();
  tunnel_init(t, tid, idle, ta_data);
  /* Counted before the thread can see it: it may end it (and free it) at once. */
  __sync_fetch_and_add(&n_tunnels, 1);
  __sync_fetch_and_add(&n_started, 1);
  if (loop_run(add_posted, t) != 0) {
    __sync_fetch_and_sub(&n_tunnels, 1);
    __sync_fetch_and_sub(&n_started, 1);
    close(t->fd[0]);
    close(t->fd[1]);
    free(t);
    return loop_throw(env, "ENOMEM", "spliceStart: out of memory");
  }
  /* Not t->id: once posted, the tunnel belongs to the thread. */
  napi_value id;
  napi_create_uint32(env, tid, &id);
  return id;
}

static napi_value splice_abort(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  uint32_t id;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_uint32(env, argv[0], &id) != napi_ok)
    return loop_throw(env, "EINVAL", "spliceAbort: expected a tunnel id");
  if (!loop_running()) return NULL;
  if (loop_run(abort_posted, (void *)(uintptr_t)id) != 0) return loop_throw(env, "ENOMEM", "spliceAbort: out of memory");
  return NULL;
}

static napi_value splice_stats(napi_env env, napi_callback_info info) {
  static const char *const names[] = { "tunnels", "pipes", "started", "ended" };
  const double values[] = { (double)n_tunnels, (double)n_pipes, (double)n_started, (double)n_ended };
  return loop_figures(env, names, values, 4);
}

void splice_register(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    { "spliceInit", NULL, splice_init, NULL, NULL, NULL, napi_enumerable, NULL },
    { "spliceStart", NULL, splice_start, NULL, NULL, NULL, napi_enumerable, NULL },
    { "spliceAbort", NULL, splice_abort, NULL, NULL, NULL, napi_enumerable, NULL },
    { "spliceStats", NULL, splice_stats, NULL, NULL, NULL, napi_enumerable, NULL },
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
