"""The search space as data: per-layer genes (types), the block kinds' torch-free metadata (kinds),
and the genome codec over a catalog space (search_space)."""

from nasq.space.search_space import SearchSpace, layer_fields
from nasq.space.types import Gene, LayerChoice, LayerShape, SubnetSpec

__all__ = ["Gene", "LayerChoice", "LayerShape", "SearchSpace", "SubnetSpec", "layer_fields"]
