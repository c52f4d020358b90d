"""A dataset-level GloPER model: one network for a whole archive.

Per-photo GloPER trains a fresh network per photo and local size; the dataset model
is the same network (:class:`~gloper_jobs.methods.gloper.net.GloperNet`) with one head
set per local size, trained once on an archive's photos by the same loop and loss
(:mod:`.train`), saved in checkpoints (:mod:`.checkpoint`); then a photo costs one
forward pass and the usual read-out (:mod:`.extract`).
"""
