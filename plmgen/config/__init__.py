"""Typed configuration: the one source of truth for every knob in plmgen.

Each config is a dataclass validated in ``__post_init__`` (a bad value raises ``UserError``, a ValueError naming the
field) and round-trips through YAML. ``ModelConfig.named("tiny"|"small"|"base"|"large")`` gives the standard sizes.
Import them from here; each lives in the module of its area:

- ``base``: ``YamlConfig`` (dict/YAML round trip) and ``check`` (the validation helper)
- ``model``: ``ModelConfig``, ``NAMED_SIZES``
- ``objective``: ``ObjectiveConfig`` with the nested ``Seq2SeqConfig``; the ``name:weight`` mixture parsers
- ``experiment``: ``DataConfig``, ``TrainConfig`` and the whole run, ``ExperimentConfig``
- ``decode``: ``DecodeConfig``, ``TranslateConfig``

The atomic file writers once defined here live in ``plmgen.files`` and are re-exported for old imports.
"""

from ..files import atomic_write_text, fsync_file, temp_beside, user_mode
from .base import PRECISIONS, YamlConfig, check, parse_precision
from .decode import DecodeConfig, TranslateConfig, parse_speculate, parse_speculate_list
from .experiment import DataConfig, ExperimentConfig, TrainConfig
from .model import NAMED_SIZES, ModelConfig
from .objective import (OBJECTIVE_NAMES, SEQ2SEQ_ORDERS, ObjectiveConfig, Seq2SeqConfig, parse_mixture, parse_order_mix,
                        parse_weighted)

__all__ = ["NAMED_SIZES", "OBJECTIVE_NAMES", "PRECISIONS", "SEQ2SEQ_ORDERS", "DataConfig", "DecodeConfig",
           "ExperimentConfig", "ModelConfig", "ObjectiveConfig", "Seq2SeqConfig", "TrainConfig", "TranslateConfig",
           "YamlConfig", "atomic_write_text", "check", "fsync_file", "parse_mixture", "parse_order_mix", "parse_precision", "parse_weighted",
           "temp_beside", "user_mode"]
