"""The session loop's tests moved to tests/test_session_conformance.py, where each runs on both
WebSocket transports (staleness, maximum age, the drain on stop, keepalive under backpressure,
a stop during the handshake); the close reasons are in tests/test_session_close_reason.py."""
