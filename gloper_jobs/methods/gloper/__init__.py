"""GloPER: a small UNet reconstructs the photo from two colours per local window (METHOD.md).

One home for the method:

- :mod:`.params`: the one parameter family (per-photo :class:`GloperParams`, the dataset
  model's :class:`DatasetModelParams`; the engine's options are derived from them);
- :mod:`.net`: the one network (UNet trunk, a centroid head set per local size);
- :mod:`.loss`: the one reconstruction loss (and its Gumbel-softmax sampling);
- :mod:`.models` and :mod:`.engine`: the networks the loop steps, and the one training
  loop with per-photo early stop, size chain, stacking and precision options;
- :mod:`.readout`: masks in both polarities and the label-free choice;
- :mod:`.segmenter`: the registry's method; :mod:`.dataset_model`: checkpoint, train, extract.
"""

from gloper_jobs.methods.gloper.params import PAPER_LOCAL_SIZES, DatasetModelParams, GloperParams
from gloper_jobs.methods.gloper.segmenter import GloperSegmenter

__all__ = ["PAPER_LOCAL_SIZES", "DatasetModelParams", "GloperParams", "GloperSegmenter"]
