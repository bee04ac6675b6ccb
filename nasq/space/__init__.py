"""The search space as data: per-layer genes (types), the block kinds' torch-free metadata (kinds),
the genome codec over a catalog space (search_space), and a generic categorical space with no
network (generic)."""

from nasq.space.generic import GenericSpace, GenericSpec, load_space
from nasq.space.search_space import SearchSpace, layer_fields
from nasq.space.types import Gene, LayerChoice, LayerShape, SubnetSpec

__all__ = ["GenericSpace", "GenericSpec", "Gene", "LayerChoice", "LayerShape", "SearchSpace", "SubnetSpec",
           "layer_fields", "load_space"]
