/*
 * The relay thread: one epoll loop shared by the splice tunnels (splice.c) and the SOCKS5 accept
 * path (door_*.c), a queue of work posted to it from the JavaScript thread, and one queue of
 * records back to JavaScript (a thread-safe function), so records of every client arrive in the
 * order they were posted. loop.h says what clients register; the loop calls them only through
 * those callbacks.
 */
#define _GNU_SOURCE
#include "loop.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define MAX_EVENTS 256
#define SWEEP_MS 250

typedef struct work {
  void (*fn)(void *);
  void *arg;
  struct work *next;
} work;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static work *work_head, *work_tail;
/* Clients: added under `lock` (any thread), read by the loop under it once per batch. */
static loop_client *clients;
static int started;
int loop_epfd = -1;
static int evfd = -1;
static napi_threadsafe_function to_js;
static uint32_t next_id;

uint32_t loop_new_id(void) {
  uint32_t id = __sync_add_and_fetch(&next_id, 1);
  return id ? id : __sync_add_and_fetch(&next_id, 1);
}

int loop_running(void) {
  return started;
}

int64_t loop_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void loop_add_client(loop_client *c) {
  pthread_mutex_lock(&lock);
  c->next = clients;
  clients = c;
  pthread_mutex_unlock(&lock);
}

void loop_post_js(js_record *r) {
  if (napi_call_threadsafe_function(to_js, r, napi_tsfn_blocking) != napi_ok) r->deliver(NULL, NULL, r);
}

int loop_run(void (*fn)(void *), void *arg) {
  work *w = malloc(sizeof *w);
  if (!w) return -1;
  w->fn = fn;
  w->arg = arg;
  w->next = NULL;
  pthread_mutex_lock(&lock);
  if (work_tail) work_tail->next = w;
  else work_head = w;
  work_tail = w;
  pthread_mutex_unlock(&lock);
  uint64_t one = 1;
  (void)!write(evfd, &one, sizeof one);
  return 0;
}

static void take_work(void) {
  pthread_mutex_lock(&lock);
  work *w = work_head;
  work_head = work_tail = NULL;
  pthread_mutex_unlock(&lock);
  while (w) {
    work *next = w->next;
    w->fn(w->arg);
    free(w);
    w = next;
  }
}

static loop_client *client_list(void) {
  pthread_mutex_lock(&lock);
  loop_client *c = clients;
  pthread_mutex_unlock(&lock);
  return c;
}

static void *loop_thread(void *arg) {
  (void)arg;
  struct epoll_event evs[MAX_EVENTS];
  int64_t last_sweep = loop_now_ms();
  int busy = 0;
  for (;;) {
    int n = epoll_wait(loop_epfd, evs, MAX_EVENTS, busy ? 0 : 1000);
    if (n < 0 && errno != EINTR) break;
    for (int i = 0; i < n; i++) {
      loop_source *src = evs[i].data.ptr;
      if (src == NULL) {
        uint64_t v;
        (void)!read(evfd, &v, sizeof v);
        take_work();
        continue;
      }
      src->on_event(src, evs[i].events);
    }
    loop_client *list = client_list();
    busy = 0;
    for (loop_client *c = list; c; c = c->next)
      if (c->drain && c->drain()) busy = 1;
    int64_t now = loop_now_ms();
    if (now - last_sweep >= SWEEP_MS) {
      last_sweep = now;
      for (loop_client *c = list; c; c = c->next)
        if (c->sweep) c->sweep(now);
    }
    for (loop_client *c = list; c; c = c->next)
      if (c->bury) c->bury();
  }
  return NULL;
}

/* Every record goes through here on the JavaScript thread. */
static void call_js(napi_env env, napi_value js_cb, void *context, void *data) {
  (void)context;
  js_record *r = data;
  r->deliver(env, js_cb, r);
}

napi_value loop_throw(napi_env env, const char *code, const char *msg) {
  napi_throw_error(env, code, msg);
  return NULL;
}

int loop_start(napi_env env, napi_value cb) {
  napi_value name;
  napi_create_string_utf8(env, "sockstap relay thread", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, cb, NULL, name, 0, 1, NULL, NULL, NULL, call_js, &to_js) != napi_ok) {
    loop_throw(env, "ENATIVE", "spliceInit: cannot create the completion callback");
    return -1;
  }
  /* Open JavaScript sockets keep the process alive while tunnels run; this callback must not. */
  napi_unref_threadsafe_function(env, to_js);
  loop_epfd = epoll_create1(EPOLL_CLOEXEC);
  evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (loop_epfd < 0 || evfd < 0) {
    loop_throw(env, "ENATIVE", "spliceInit: epoll/eventfd failed");
    return -1;
  }
  struct epoll_event ev;
  ev.events = EPOLLIN;
  ev.data.ptr = NULL;
  epoll_ctl(loop_epfd, EPOLL_CTL_ADD, evfd, &ev);
  pthread_t th;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  if (pthread_create(&th, &attr, loop_thread, NULL) != 0) {
    pthread_attr_destroy(&attr);
    loop_throw(env, "ENATIVE", "spliceInit: cannot start the relay thread");
    return -1;
  }
  pthread_attr_destroy(&attr);
  started = 1;
  return 0;
}

napi_value loop_figures(napi_env env, const char *const names[], const double values[], int n) {
  napi_value obj, v;
  napi_create_object(env, &obj);
  for (int i = 0; i < n; i++) {
    napi_create_double(env, values[i], &v);
    napi_set_named_property(env, obj, names[i], v);
  }
  return obj;
}
