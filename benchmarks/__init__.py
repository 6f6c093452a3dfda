"""The benchmark harness of `make bench` (docs: load-testing.md#make-bench)."""
