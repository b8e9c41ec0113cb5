"""ocformer: train small Transformers as an optimal control problem.

Tokens are particles, layers are time steps and each layer's weights are one action
shared by every token. Lifted to measures and triply quantized (token states, measures,
weights), training becomes a finite deterministic MDP that dynamic programming solves
exactly; the optimal plan is an ordinary PyTorch encoder stack.
"""

from ocformer.actions import ActionSet, grid_actions, load_codebook, ternary_actions
from ocformer.config import ActionConfig, QuantizerConfig, TrainConfig
from ocformer.data import Dataset, Split, load_dataset, load_npz, split_dataset
from ocformer.embedding import Embedding, EmbeddingConfig
from ocformer.errors import ConfigError, DataError, OcformerError
from ocformer.model import OCTransformer, align_dataset, load_model, save_model
from ocformer.solver import Solution, solve
from ocformer.train import Plan, TrainResult, train

__all__ = [
    "ActionConfig",
    "ActionSet",
    "ConfigError",
    "DataError",
    "Dataset",
    "Embedding",
    "EmbeddingConfig",
    "OCTransformer",
    "OcformerError",
    "Plan",
    "QuantizerConfig",
    "Solution",
    "Split",
    "TrainConfig",
    "TrainResult",
    "align_dataset",
    "grid_actions",
    "load_codebook",
    "load_dataset",
    "load_model",
    "load_npz",
    "save_model",
    "solve",
    "split_dataset",
    "ternary_actions",
    "train",
]

__version__ = "0.1.0"
