"""Forge's trainer. It never imports `forged`: its contract with the daemon is docs/runner-protocol.md."""

# Bumped whenever docs/runner-protocol.md changes in a way an older forged or runner cannot follow. Runner
# images carry it as the `forge.runner-protocol` label, so forged can refuse an image that speaks another.
RUNNER_PROTOCOL_VERSION = 1
