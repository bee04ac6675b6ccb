"""The ``nasq`` command line (entry point ``nasq.cli:main``). ``core`` registers its commands when
imported; the others are registered below in the order ``nasq --help`` lists them."""

from nasq.cli import core, quant, search, service
from nasq.cli.app import app, main

service.register(app)
search.register(app)
quant.register(app)

__all__ = ["app", "core", "main", "quant", "search", "service"]
