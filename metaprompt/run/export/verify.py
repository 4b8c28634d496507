"""The export's own check: its peft files, loaded by peft alone, give metaprompt's ``[MASK]`` states."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from metaprompt.run.export.formats import BACKBONE_ADAPTER_DIR, PROBE_TEXTS

# -- the export's own check ------------------------------------------------------------------------
@torch.no_grad()
def verify_peft_files(out: Path, setup, tensors: dict[str, torch.Tensor], usage: dict[str, Any]) -> float | None:
    """Load the written files with transformers + peft and compare ``[MASK]`` states with metaprompt's
    (on a few probe texts). None when the export is not exact (nothing to compare with)."""
    from peft import PeftModel
    from transformers import AutoModel, AutoModelForMaskedLM

    if not usage["exact"]:
        return None
    auto = AutoModelForMaskedLM if usage["auto_class"] == "AutoModelForMaskedLM" else AutoModel
    source = str(out / usage["base_model_dir"]) if usage.get("base_model_dir") else setup.backbone.path
    model = auto.from_pretrained(source)
    if usage.get("backbone_adapter") == BACKBONE_ADAPTER_DIR:
        model = PeftModel.from_pretrained(model, str(out / BACKBONE_ADAPTER_DIR)).merge_and_unload()
    if usage["adapter"]:
        model = PeftModel.from_pretrained(model, str(out))
    model.eval()
    rows = build_peft_inputs(setup.backbone.tokenizer, usage, list(PROBE_TEXTS))
    kwargs = {"input_ids": rows["input_ids"], "attention_mask": rows["attention_mask"], "output_hidden_states": True}
    if usage.get("position_ids"):
        kwargs["position_ids"] = rows["position_ids"]
    output = model(**kwargs)
    hidden = output.hidden_states[-1]
    h_peft = hidden[torch.arange(hidden.shape[0]), rows["mask_positions"] + usage["output_offset"]]
    template = setup.template
    batch = template.batch(template.tokenize_texts(list(PROBE_TEXTS)))
    h_ours, _ = setup.classifier.encode({k: v for k, v in tensors.items()}, batch)
    return float((h_peft - h_ours).abs().max())


def build_peft_inputs(tokenizer, usage: dict[str, Any], texts: list[str]) -> dict[str, torch.Tensor]:
    """The peft model's inputs for ``texts``, following ``metaprompt.json["peft"]`` (the recipe the
    model card describes; the downstream script and the tests implement it on their own)."""
    spec = usage["input_ids"]
    prefix = " " if spec["text_leading_space"] else ""
    encoded = tokenizer([prefix + t.lstrip() if prefix else t for t in texts], add_special_tokens=False,
                        truncation=True, max_length=spec["text_max_tokens"])["input_ids"]
    rows = [spec["before_text"] + list(ids) + spec["after_text"] for ids in encoded]
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, :len(r)] = torch.tensor(r)
        mask[i, :len(r)] = 1
    out = {"input_ids": input_ids, "attention_mask": mask,
           "mask_positions": torch.tensor([r.index(usage["mask_token_id"]) for r in rows])}
    if usage.get("position_ids"):
        out["position_ids"] = (usage["position_ids"]["start"] + torch.arange(width)).expand(len(rows), width)
    return out
