"""Distributed support for muonlab optimizers — each matrix orthogonalized whole, once, on one rank.

The optimizers (:mod:`muonlab.optim`) construct an :class:`OptimizerDistribution` and hand it parameter lists and
tensors; nothing here imports the optimizers, so this package sits below them (it uses only torch.distributed).
The trainer's set-up (:mod:`.parallel`: DDP/FSDP2 wrapping, sharded checkpoints) lives here too.

- Replicated parameters (DDP, or plain tensors with an initialized process group): the matrix work is
  split across ranks (balanced by flops, same-shape matrices together) and the results all-gathered.
- Sharded parameters (DTensor on a mesh of any number of dims with ``Shard(d)``, ``_StridedShard`` or
  ``Replicate`` on each: FSDP2, HSDP, FSDP2 over tensor parallelism, expert stacks): each whole matrix is
  brought to its owner rank — one of all the mesh's ranks — with one ``all_to_all`` per dtype,
  orthogonalized there, and its pieces sent back (:mod:`.comm`'s phases: to owners → compute → back to
  shards → gather replicated). Pieces that are whole blocks already (experts, heads) stay where they are.

Nothing to configure: ``muonlab.Muon(model.parameters())`` reads the layout from the parameters
(``distributed="none"`` or a ProcessGroup/DeviceMesh to override). Modules: :mod:`.plan` (who does
what), :mod:`.comm` (how matrices travel), :mod:`.resolve` (layouts, checks), :mod:`.optimizer` (the
optimizer's side), :mod:`.layout` (which rank holds which piece), :mod:`.blocks` (pieces that are whole
blocks), :mod:`.launch` (run a function on W local gloo ranks), :mod:`.measure` (bytes moved),
:mod:`.llama` (a Llama-style model and torch's layouts of it, for tests, benches and docs/scale.md).
"""

from muonlab.distributed.blocks import MatrixBlocks
from muonlab.distributed.comm import LOCAL, CommStats, map_whole
from muonlab.distributed.layout import Layout
from muonlab.distributed.optimizer import OptimizerDistribution
from muonlab.distributed.plan import assign_owners, matrix_flops, shard_sizes
from muonlab.distributed.resolve import Distribution, layout_of, resolve_distribution

__all__ = [
    "CommStats",
    "Distribution",
    "LOCAL",
    "Layout",
    "MatrixBlocks",
    "OptimizerDistribution",
    "assign_owners",
    "layout_of",
    "map_whole",
    "matrix_flops",
    "resolve_distribution",
    "shard_sizes",
]
