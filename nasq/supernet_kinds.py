"""Names of the elastic block kinds (torch-free), so catalogs can be validated without torch.

The implementations register themselves in :mod:`nasq.supernet.network` under the same names.
"""

from __future__ import annotations

from nasq.registry import Registry

BLOCK_KINDS: Registry[str] = Registry("block")
BLOCK_KINDS.add("mbconv", "nasq.supernet.network:ElasticMBConv")
