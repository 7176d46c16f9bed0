/*
 * The relay thread's event loop (loop.c), and what its clients register with it. The loop knows
 * no client by name: every object it watches starts with a `loop_source` that says which function
 * handles its events, and every client that needs the periodic sweep or the end-of-batch cleanup
 * registers a `loop_client`. The splice tunnels (splice.c) and the SOCKS5 accept path (door_*.c)
 * are two such clients; neither the loop nor the tunnels call the door.
 */
#ifndef SOCKSTAP_LOOP_H
#define SOCKSTAP_LOOP_H

#include <node_api.h>
#include <stdint.h>

/* The first member of every object registered with the loop's epoll (ev.data.ptr). */
typedef struct loop_source {
  void (*on_event)(struct loop_source *self, uint32_t events);
} loop_source;

/*
 * A client's hooks, called on the relay thread after each batch of events, in this order:
 * drain (run work the client queued for itself; nonzero when some is still queued, so the loop
 * polls again without waiting), sweep about every 250 ms (deadlines), bury (free what no event of
 * the batch can point at any more). Any may be NULL.
 */
typedef struct loop_client {
  int (*drain)(void);
  void (*sweep)(int64_t now);
  void (*bury)(void);
  struct loop_client *next;
} loop_client;

/* Register a client (from the JavaScript thread, before or after the loop starts; never removed). */
void loop_add_client(loop_client *c);

/*
 * A record for the JavaScript thread. deliver() runs there with the callback given to
 * loop_start (env is NULL when the environment is going away: then it only frees what it holds)
 * and frees the record. Records arrive in the order they were posted, whoever posted them.
 */
typedef struct js_record {
  void (*deliver)(napi_env env, napi_value loop_cb, struct js_record *r);
} js_record;
void loop_post_js(js_record *r);

/* Start the thread once, with the JavaScript function records are delivered to. Throws and
 * returns -1 on failure. */
int loop_start(napi_env env, napi_value cb);

/* The loop's epoll descriptor (-1 before loop_start). */
extern int loop_epfd;

int loop_running(void);
int64_t loop_now_ms(void);
/* A fresh id from the one sequence tunnels and handshakes share (any thread); never 0. */
uint32_t loop_new_id(void);
/* Run fn(arg) on the relay thread, soon (any thread). Returns 0, or -1 when out of memory. */
int loop_run(void (*fn)(void *), void *arg);

/* A JavaScript object of named figures ({ name: value, ... }) for the *Stats() functions. */
napi_value loop_figures(napi_env env, const char *const names[], const double values[], int n);

/* Throw an Error with this code; returns NULL for the caller to return. */
napi_value loop_throw(napi_env env, const char *code, const char *msg);

#endif
