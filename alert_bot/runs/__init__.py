"""The training-run watch: runs seen from the GPU process metrics, their end messages,
energy and cost, and the chat commands that read them."""
