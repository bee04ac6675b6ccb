"""The names of a trained supernet's files in a run folder, torch-free: a reader that only looks
for them (``nasq front``, finding a finished run) need not load torch. :mod:`checkpoint` writes
and reads them."""

WEIGHTS = "supernet.safetensors"
RECORD = "supernet.json"
LOCK = ".supernet.lock"  # held while the pair is renamed into place or read
