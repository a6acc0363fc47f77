"""Training CIFAR-10 networks: recipes, augmentation, the resumable loop, checkpoints, several processes, the command.

Plain functions first (:func:`train`); ``python main.py train`` (:mod:`engine.cli.train`) is a
thin layer over them.
"""

from engine.training.augment import alternating_flips, augment, flip_coins
from engine.training.checkpoint import CheckpointError, identity_mismatch, load_checkpoint, save_checkpoint
from engine.training.distributed import DistributedError, Launch, Ranks, launch_from_env
from engine.training.loop import (
    CheckpointPlan,
    TrainStatus,
    build_for_training,
    kaiming_init,
    train,
    training_loss,
    uses_autocast,
    zero_init_residual,
)
from engine.training.recipes import (
    EPOCHS,
    RECIPES,
    Recipe,
    RecipeError,
    lr_factor,
    parse_overrides,
    recipe_for,
    recipe_from_record,
)

__all__ = [
    "EPOCHS", "RECIPES", "CheckpointError", "CheckpointPlan", "DistributedError", "Launch", "Ranks", "Recipe",
    "RecipeError", "parse_overrides", "recipe_from_record",
    "TrainStatus", "alternating_flips", "augment", "build_for_training", "flip_coins", "identity_mismatch",
    "kaiming_init", "launch_from_env", "load_checkpoint", "lr_factor", "recipe_for", "save_checkpoint", "train",
    "training_loss", "uses_autocast", "zero_init_residual",
]
