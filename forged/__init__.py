"""forged: the Forge daemon. It owns the queue, the GPUs, the runners and the state."""

__version__ = "0.1.0"
