"""Lightning callbacks: sample grids, training plots, quality scores, the run config in checkpoints,
experience replay for D."""
from gan_modules.callbacks.plots import TrainingPlots
from gan_modules.callbacks.quality import SampleQuality
from gan_modules.callbacks.replay import ReplayBuffer
from gan_modules.callbacks.run_config import RunConfigInCheckpoint
from gan_modules.callbacks.samples import SampleGrid

__all__ = ["SampleGrid", "SampleQuality", "TrainingPlots", "RunConfigInCheckpoint", "ReplayBuffer"]
