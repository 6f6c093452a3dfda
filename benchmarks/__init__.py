"""The benchmark harness of SPEC §11 (`make bench`)."""
