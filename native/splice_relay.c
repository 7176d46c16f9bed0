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
 */
#define _GNU_SOURCE
#include <node_api.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "relay_thread.h"

#define PIPE_SIZE (256 * 1024)
#define POOL_KEEP 64
/* Rounds one direction may run per wake-up before others get their turn. */
#define ROUND_BUDGET 16

typedef struct tunnel tunnel;

typedef struct endpoint {
  ep_kind kind; /* EP_TUNNEL */
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

typedef enum { CMD_ADD, CMD_ABORT, CMD_RUN } cmd_kind;
typedef struct command {
  cmd_kind kind;
  tunnel *t;
  uint32_t id;
  void (*fn)(void *); /* CMD_RUN */
  void *arg;
  struct command *next;
} command;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static command *cmd_head, *cmd_tail;
static int started_thread;
int relay_epfd = -1;
#define epfd relay_epfd
static int evfd = -1;
static napi_threadsafe_function on_done;
static uint32_t next_id;

uint32_t relay_new_id(void) {
  uint32_t id = __sync_add_and_fetch(&next_id, 1);
  return id ? id : __sync_add_and_fetch(&next_id, 1); /* 0 is never an id */
}

int relay_running(void) {
  return started_thread;
}

/* Thread-owned state. */
static tunnel *live;
static tunnel *runq;
/* Ended tunnels, freed once no event of the current batch can point at them any more. */
static tunnel *graveyard;
static int pool[POOL_KEEP][2];
static int pool_n;

/* Counters read by spliceStats (relaxed: figures for the dashboard and tests). */
static volatile long n_tunnels, n_pipes, n_started, n_ended;

int64_t relay_now_ms(void);
#define now_ms relay_now_ms
int64_t relay_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

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

void relay_post_js(js_record *r) {
  if (napi_call_threadsafe_function(on_done, r, napi_tsfn_blocking) != napi_ok) r->deliver(NULL, NULL, r);
}

static void post_done(tunnel *t) {
  done_record *r = malloc(sizeof *r);
  if (!r) return;
  r->head.deliver = deliver_done;
  r->id = t->id;
  r->up = (double)t->dir[0].bytes;
  r->down = (double)t->dir[1].bytes;
  r->result = t->result;
  relay_post_js(&r->head);
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

static void take_commands(void) {
  pthread_mutex_lock(&lock);
  command *c = cmd_head;
  cmd_head = cmd_tail = NULL;
  pthread_mutex_unlock(&lock);
  while (c) {
    command *next = c->next;
    if (c->kind == CMD_ADD) {
      add_tunnel(c->t);
    } else if (c->kind == CMD_RUN) {
      c->fn(c->arg);
    } else {
      relay_abort_tunnel(c->id);
    }
    free(c);
    c = next;
  }
}

static void sweep_idle(int64_t now) {
  tunnel *t = live;
  while (t) {
    tunnel *next = t->next;
    if (t->idle_ms > 0 && now - t->last_ms >= t->idle_ms) finish(t, "idle");
    t = next;
  }
}

static void *relay_thread(void *arg) {
  (void)arg;
  struct epoll_event evs[256];
  int64_t last_sweep = now_ms();
  for (;;) {
    int n = epoll_wait(epfd, evs, 256, runq ? 0 : 1000);
    if (n < 0 && errno != EINTR) break;
    for (int i = 0; i < n; i++) {
      if (evs[i].data.ptr == NULL) {
        uint64_t v;
        (void)!read(evfd, &v, sizeof v);
        take_commands();
        continue;
      }
      if (*(ep_kind *)evs[i].data.ptr != EP_TUNNEL) {
        door_event(evs[i].data.ptr, evs[i].events);
        continue;
      }
      endpoint *ep = evs[i].data.ptr;
      tunnel *t = ep->t;
      if (t->done) continue;
      if (evs[i].events & EPOLLERR) {
        /* A reset or other socket error: it may never show in a read or write that is not made. */
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(t->fd[ep->side], SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err != 0) {
          finish(t, errno_result(err));
          continue;
        }
      }
      service(t);
    }
    run_queue();
    int64_t now = now_ms();
    if (now - last_sweep >= 250) {
      last_sweep = now;
      sweep_idle(now);
      door_sweep(now);
    }
    bury();
    door_bury();
  }
  return NULL;
}

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

/* One queue for every record the thread sends to JavaScript, so they arrive in the order sent. */
static void call_js(napi_env env, napi_value js_cb, void *context, void *data) {
  js_record *r = data;
  r->deliver(env, js_cb, r);
}

static napi_value throw_code(napi_env env, const char *code, const char *msg) {
  napi_throw_error(env, code, msg);
  return NULL;
}

static napi_value splice_init(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], name;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1)
    return throw_code(env, "EINVAL", "spliceInit: expected a callback");
  if (started_thread) return throw_code(env, "EEXIST", "spliceInit: already initialised");
  napi_create_string_utf8(env, "sockstap splice relay", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, argv[0], NULL, name, 0, 1, NULL, NULL, NULL, call_js, &on_done) != napi_ok)
    return throw_code(env, "ENATIVE", "spliceInit: cannot create the completion callback");
  /* Open JavaScript sockets keep the process alive while tunnels run; this callback must not. */
  napi_unref_threadsafe_function(env, on_done);
  epfd = epoll_create1(EPOLL_CLOEXEC);
  evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (epfd < 0 || evfd < 0) return throw_code(env, "ENATIVE", "spliceInit: epoll/eventfd failed");
  struct epoll_event ev;
  ev.events = EPOLLIN;
  ev.data.ptr = NULL;
  epoll_ctl(epfd, EPOLL_CTL_ADD, evfd, &ev);
  pthread_t th;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  if (pthread_create(&th, &attr, relay_thread, NULL) != 0) {
    pthread_attr_destroy(&attr);
    return throw_code(env, "ENATIVE", "spliceInit: cannot start the relay thread");
  }
  pthread_attr_destroy(&attr);
  started_thread = 1;
  return NULL;
}

static void push_command(command *c) {
  c->next = NULL;
  pthread_mutex_lock(&lock);
  if (cmd_tail) cmd_tail->next = c;
  else cmd_head = c;
  cmd_tail = c;
  pthread_mutex_unlock(&lock);
  uint64_t one = 1;
  (void)!write(evfd, &one, sizeof one);
}

/* A new tunnel's fields; the caller has set t->fd[]. */
static void tunnel_init(tunnel *t, uint32_t id, int64_t idle, double *live) {
  t->id = id;
  t->idle_ms = idle > 0 ? idle : 0;
  t->live = live;
  for (int i = 0; i < 2; i++) {
    t->ep[i].kind = EP_TUNNEL;
    t->ep[i].t = t;
    t->ep[i].side = i;
    t->dir[i].pr = t->dir[i].pw = -1;
  }
  t->dir[0].src = 0;
  t->dir[0].dst = 1;
  t->dir[1].src = 1;
  t->dir[1].dst = 0;
}

void relay_adopt(uint32_t id, int cfd, int sfd, int64_t idle_ms, double *live) {
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

int relay_abort_tunnel(uint32_t id) {
  for (tunnel *t = live; t; t = t->next) {
    if (t->id == id) {
      finish(t, "aborted");
      return 1;
    }
  }
  return 0;
}

int relay_run(void (*fn)(void *), void *arg) {
  command *c = malloc(sizeof *c);
  if (!c) return -1;
  c->kind = CMD_RUN;
  c->fn = fn;
  c->arg = arg;
  c->t = NULL;
  push_command(c);
  return 0;
}

static napi_value splice_start(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  int32_t cfd, sfd;
  int64_t idle;
  napi_typedarray_type ta_type;
  size_t ta_len = 0;
  void *ta_data = NULL;
  if (!started_thread) return throw_code(env, "ENATIVE", "spliceStart: spliceInit was not called");
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 4 ||
      napi_get_value_int32(env, argv[0], &cfd) != napi_ok || napi_get_value_int32(env, argv[1], &sfd) != napi_ok ||
      napi_get_value_int64(env, argv[2], &idle) != napi_ok || cfd < 0 || sfd < 0 ||
      napi_get_typedarray_info(env, argv[3], &ta_type, &ta_len, &ta_data, NULL, NULL) != napi_ok ||
      ta_type != napi_float64_array || ta_len < 2)
    return throw_code(env, "EINVAL", "spliceStart: expected (clientFd, serverFd, idleMs, Float64Array(2))");
  tunnel *t = calloc(1, sizeof *t);
  command *c = malloc(sizeof *c);
  if (!t || !c) {
    free(t);
    free(c);
    return throw_code(env, "ENOMEM", "spliceStart: out of memory");
  }
  t->fd[0] = fcntl(cfd, F_DUPFD_CLOEXEC, 0);
  t->fd[1] = t->fd[0] < 0 ? -1 : fcntl(sfd, F_DUPFD_CLOEXEC, 0);
  if (t->fd[0] < 0 || t->fd[1] < 0) {
    int e = errno;
    if (t->fd[0] >= 0) close(t->fd[0]);
    free(t);
    free(c);
    return throw_code(env, e == EMFILE ? "EMFILE" : e == ENFILE ? "ENFILE" : "EBADF", "spliceStart: cannot duplicate the descriptors");
  }
  tunnel_init(t, relay_new_id(), idle, ta_data);
  __sync_fetch_and_add(&n_tunnels, 1);
  __sync_fetch_and_add(&n_started, 1);
  c->kind = CMD_ADD;
  c->t = t;
  napi_value id;
  napi_create_uint32(env, t->id, &id);
  push_command(c);
  return id;
}

static napi_value splice_abort(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  uint32_t id;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_uint32(env, argv[0], &id) != napi_ok)
    return throw_code(env, "EINVAL", "spliceAbort: expected a tunnel id");
  if (!started_thread) return NULL;
  command *c = malloc(sizeof *c);
  if (!c) return throw_code(env, "ENOMEM", "spliceAbort: out of memory");
  c->kind = CMD_ABORT;
  c->id = id;
  c->t = NULL;
  push_command(c);
  return NULL;
}

napi_value relay_figures(napi_env env, const char *const names[], const double values[], int n) {
  napi_value obj, v;
  napi_create_object(env, &obj);
  for (int i = 0; i < n; i++) {
    napi_create_double(env, values[i], &v);
    napi_set_named_property(env, obj, names[i], v);
  }
  return obj;
}

static napi_value splice_stats(napi_env env, napi_callback_info info) {
  static const char *const names[] = { "tunnels", "pipes", "started", "ended" };
  const double values[] = { (double)n_tunnels, (double)n_pipes, (double)n_started, (double)n_ended };
  return relay_figures(env, names, values, 4);
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
