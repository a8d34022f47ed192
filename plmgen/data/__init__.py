"""Data: benchmark recipes (``prepare``), the prepared-folder format and readers for the rest of plmgen."""

from plmgen.data.prepare import RECIPES, prepare
from plmgen.data.splits import SPLITS, load_manifest, load_pairs, monolingual_text
from plmgen.data.userdata import read_text_files

__all__ = ["RECIPES", "SPLITS", "load_manifest", "load_pairs", "monolingual_text", "prepare", "read_text_files"]
