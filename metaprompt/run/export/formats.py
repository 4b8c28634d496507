"""The file names and format strings of an export directory, and its error (shared by the export's modules and
:func:`metaprompt.load_init`)."""
from __future__ import annotations

from metaprompt.errors import UserError

EXPORT_FORMAT = "metaprompt.export/v1"
FORMATS = ("native", "peft")
INIT_FILE = "init.safetensors"
META_FILE = "metaprompt.json"
CARD_FILE = "README.md"
VERBALIZER_FILE = "verbalizer.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
BASE_MODEL_DIR = "base_model"  # full / bitfit / unfrozen backbone: the learned weights as a transformers model
BACKBONE_ADAPTER_DIR = "backbone_adapter"  # LoRA / IA3 when a soft prompt takes the top-level adapter
PEFT_TASK_TYPE = "FEATURE_EXTRACTION"  # the peft model passes inputs through and returns the backbone's outputs
VERIFY_TOLERANCE = 1e-4  # the export's own check of its peft files (tests hold it to 1e-5)
PROBE_TEXTS = ("a short probe sentence", "another one , about the news today", "x")


class ExportError(UserError, ValueError):
    """A run cannot be exported, or an export cannot be read (the message says why)."""
