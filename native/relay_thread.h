/*
 * What the splice relay thread (splice_relay.c) shares with the SOCKS accept path that runs on it
 * (socks_door.c). Every object registered with the thread's epoll starts with an `ep_kind`, so
 * one loop can dispatch tunnels, listeners and handshakes.
 */
#ifndef SOCKSTAP_RELAY_THREAD_H
#define SOCKSTAP_RELAY_THREAD_H

#include <node_api.h>
#include <stdint.h>

typedef enum { EP_TUNNEL = 1, EP_LISTENER, EP_CONN, EP_DIAL } ep_kind;

/*
 * A record for the JavaScript thread. deliver() runs there with the spliceInit callback (env is
 * NULL when the environment is going away: then it only frees what it holds) and frees the record.
 */
typedef struct js_record {
  void (*deliver)(napi_env env, napi_value done_cb, struct js_record *r);
} js_record;
void relay_post_js(js_record *r);

/* The thread's epoll descriptor (-1 before spliceInit). */
extern int relay_epfd;

int relay_running(void);
int64_t relay_now_ms(void);
/* A fresh id from the one sequence tunnels and handshakes share (any thread). */
uint32_t relay_new_id(void);
/* Run fn(arg) on the relay thread, soon (any thread). Returns 0, or -1 when out of memory. */
int relay_run(void (*fn)(void *), void *arg);

/*
 * On the relay thread: make a spliced tunnel of two connected sockets that are not in the epoll
 * set. The tunnel takes both descriptors; `id` is what spliceAbort and onDone use.
 */
void relay_adopt(uint32_t id, int cfd, int sfd, int64_t idle_ms, double *live);

/* On the relay thread: end the tunnel with this id ("aborted"); 0 when there is none. */
int relay_abort_tunnel(uint32_t id);

/* A JavaScript object of named figures ({ name: value, ... }) for the *Stats() functions. */
napi_value relay_figures(napi_env env, const char *const names[], const double values[], int n);

/* Implemented by socks_door.c, called on the relay thread. */
void door_event(void *ptr, uint32_t events);
void door_sweep(int64_t now);
void door_bury(void);
void door_register(napi_env env, napi_value exports);

#endif
