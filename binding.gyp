{
  "targets": [
    {
      "target_name": "sockstap_native",
      "sources": ["native/sockstap_native.c", "native/splice_relay.c", "native/socks_door.c"],
      "cflags": ["-Wall", "-Wextra", "-Wno-unused-parameter", "-O2"],
      "conditions": [
        ["OS!='linux'", { "type": "none", "sources!": ["native/sockstap_native.c", "native/splice_relay.c", "native/socks_door.c"] }]
      ]
    }
  ]
}
