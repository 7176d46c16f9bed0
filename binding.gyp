{
  "targets": [
    {
      "target_name": "sockstap_native",
      "sources": ["native/sockstap_native.c", "native/loop.c", "native/splice.c", "native/door_binding.c", "native/door_machine.c", "native/door_wire.c", "native/door_memo.c", "native/hit_binding.c", "native/hit_machine.c", "native/hit_wire.c", "native/hit_table.c"],
      "cflags": ["-Wall", "-Wextra", "-Wno-unused-parameter", "-O2"],
      "conditions": [
        ["OS!='linux'", { "type": "none", "sources!": ["native/sockstap_native.c", "native/loop.c", "native/splice.c", "native/door_binding.c", "native/door_machine.c", "native/door_wire.c", "native/door_memo.c", "native/hit_binding.c", "native/hit_machine.c", "native/hit_wire.c", "native/hit_table.c"] }]
      ]
    }
  ]
}
