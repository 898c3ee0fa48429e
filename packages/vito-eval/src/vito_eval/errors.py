"""Typed input errors of vito-eval: each names the input and says what to do.

The CLI prints these without a traceback and exits with status 2; anything else is a bug.
"""

from __future__ import annotations


class EvalInputError(Exception):
    """Base class: a user-supplied input (encoder, dataset, option) cannot be used."""


class EncoderError(EvalInputError):
    """An --encoder spec is unknown, its weights file is missing, or its weights do not fit the arch."""


class DatasetError(EvalInputError):
    """A --dataset spec is unknown, its path is missing or malformed, or a class is empty."""


class ImageDecodeError(DatasetError):
    """An image file of a dataset could not be decoded."""
