"""Quantized problems of several datasets under one fixed set of quantizers.

Continuity (claim 4) and consistency (claim 5) compare the values of many training
measures. Refitting the embedding and the token codebook for each would move the
quantizers with the data, and that change would dominate the comparison. Here they
are fitted once, through ``train.build_problem``, and every other training measure is
embedded, snapped to the same codewords and started in a copy of the same problem.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from ocformer.config import TrainConfig
from ocformer.data import Dataset
from ocformer.embedding import Embedding
from ocformer.errors import ConfigError
from ocformer.mdp import QuantizedProblem
from ocformer.quantize import canonical_measure
from ocformer.train import build_problem


@dataclass(frozen=True)
class FixedQuantizers:
    """An embedding, a token codebook and an action set fitted once.

    Attributes:
        embedding: the map from raw tokens into X.
        template: the quantized problem of the data they were fitted on; its
            codebook, actions, encodings and cost are shared by every problem
            built here.
    """

    embedding: Embedding
    template: QuantizedProblem

    @classmethod
    def fit(cls, train: Dataset, config: TrainConfig) -> FixedQuantizers:
        """Fit the quantizers on ``train`` as ``ocformer train`` would.

        Raises:
            ConfigError: if ``config`` reduces the measure to a coreset: the atoms
                would then be chosen again for every measure.
        """
        if config.quantizer.atoms is not None:
            raise ConfigError(
                f"fixed quantizers keep every sequence, got `atoms` "
                f"{config.quantizer.atoms}; leave atoms unset."
            )
        setup = build_problem(train, config)
        return cls(setup.embedding, setup.problem)

    def embed(self, data: Dataset) -> np.ndarray:
        """Tokens of ``data`` in X, float64 array of shape (M, n_tokens, dim)."""
        return self.embedding(data.tokens, data.mask)

    def problem(
        self, tokens: np.ndarray, mask: np.ndarray, targets: np.ndarray
    ) -> QuantizedProblem:
        """The quantized problem started from the uniform measure on these sequences.

        Args:
            tokens: float array of shape (M, n_tokens, dim), points of X (already
                embedded), padding tokens 0.
            mask: bool array of shape (M, n_tokens), True for real tokens.
            targets: array of shape (M,), class indices or real values.

        Returns:
            The template problem with ``Lambda_0`` replaced by these M sequences,
            each of weight 1/M, snapped to the template's codebook.
        """
        codebook = self.template.codebook
        codes = codebook.encode(torch.as_tensor(tokens), torch.as_tensor(mask))
        initial = canonical_measure(
            codes.numpy().astype(codebook.code_dtype),
            np.asarray(targets),
            np.ones(len(tokens), dtype=np.int64),
        )
        return dataclasses.replace(self.template, initial=initial)

    def problem_of(self, data: Dataset) -> QuantizedProblem:
        """The quantized problem of a dataset's sequences (all of them)."""
        return self.problem(self.embed(data), data.mask, data.targets)
