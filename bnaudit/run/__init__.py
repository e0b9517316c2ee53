"""Running both sides of `compare`: inputs and safety (`inputs`, `safety`), the checkpoint's
reference (`references`, `patch`, `meta`), the plan (`plan`), chunked execution with
TensorFlow (`chunks`, `execute`), and what the differences mean (`interpret`); `pipeline`
strings them together."""
