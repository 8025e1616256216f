"""Callbacks for ``fit(callbacks=[...])``: metric writers and periodic sample grids.

    with eb.callbacks.JSONLWriter("runs/a/metrics.jsonl") as writer:
        eb.fit(model, data, strategy, ..., callbacks=[writer, eb.callbacks.SampleGrid(writer, MALA(0.05), every=1000, key=key)])

Writers follow CLU's ``MetricWriter`` methods (``write_scalars``, ``write_images``,
``flush``, ``close``); ``TensorBoardWriter`` needs ``tensorboardX`` (the ``tensorboard``
extra) and ``WandbWriter`` needs ``wandb`` (the ``wandb`` extra), each imported when the
writer is made, never by ``import declebm``.
"""

from ._files import CSVWriter as CSVWriter
from ._files import JSONLWriter as JSONLWriter
from ._samples import SampleGrid as SampleGrid
from ._tensorboard import TensorBoardWriter as TensorBoardWriter
from ._wandb import WandbWriter as WandbWriter
from ._writer import AbstractWriter as AbstractWriter
