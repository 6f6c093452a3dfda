"""The sink side of feedvault (docs: data-formats.md): windows of trades into durable objects.

Modules, one concept each:

- ``keys``: the key template and sanitizing every value put into a key
- ``encoders``: NDJSON + gzip/zstd object bodies, built incrementally
- ``windowing``: pure windowing by partition and wall-clock slot (injected clock)
- ``writer``: the ``ObjectWriter`` protocol, destinations (``s3://``, ``file://``)
- ``s3`` / ``local`` / ``memory``: object writers (aioboto3, a directory, tests)
- ``sink``: ``WindowedSink``, bounded concurrent uploads with retries
- ``spill``: windows that could not be uploaded, on local disk
- ``manifest``: the run manifest, written last
- ``verify``: checking a run against its manifest
"""
