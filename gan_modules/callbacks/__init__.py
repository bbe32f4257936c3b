"""Lightning callbacks: sample grids, training plots, and the run config in every checkpoint."""
from gan_modules.callbacks.plots import TrainingPlots
from gan_modules.callbacks.run_config import RunConfigInCheckpoint
from gan_modules.callbacks.samples import SampleGrid

__all__ = ["SampleGrid", "TrainingPlots", "RunConfigInCheckpoint"]
