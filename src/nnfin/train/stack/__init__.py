"""The step for a stack of M networks: one batched matrix product per layer for all of them.

:mod:`~nnfin.train.stack.engine` trains a group of compatible networks together,
:mod:`~nnfin.train.stack.functional` holds the stacked forward/backward kernels,
:mod:`~nnfin.train.stack.optimizers` the per-network optimizers over the stacked parameters,
:mod:`~nnfin.train.stack.plan` how candidates are grouped into stacks within a memory budget,
and :mod:`~nnfin.train.stack.batched` what the stack supports (and why not, by name).
"""
