"""The model card (``README.md``) of an export, written from ``metaprompt.json`` alone."""
from __future__ import annotations

import json
from typing import Any

from metaprompt.run.export.formats import BACKBONE_ADAPTER_DIR
from metaprompt.run.stats import fmt_pct

# -- model card ------------------------------------------------------------------------------------
def model_card(meta: dict[str, Any]) -> str:
    base = meta["base_model"]
    names = ", ".join(f"{meta['label_names'].get(str(c), c)}" for c in meta["meta_train_classes"])
    test_names = ", ".join(f"{meta['label_names'].get(str(c), c)}" for c in meta.get("meta_test_classes", []))
    peft = meta.get("peft")
    lines = []
    if peft and peft.get("available"):
        lines += ["---", "library_name: peft", f"base_model: {base['name']}", "tags:", "- metaprompt",
                  "- few-shot-classification", "---", ""]
    lines += [
        f"# {meta['title']}",
        "",
        f"- Base model: `{base['name']}` ({base.get('class', base['model_type'])}, hidden size "
        f"{base['hidden_size']}, {base['num_hidden_layers']} layers); load it with `{meta['auto_class']}`",
        f"- Data set: `{meta['dataset']}`; meta-trained on {meta['n_way']}-way {meta['k_shot']}-shot episodes of "
        f"the classes: {names}",
        f"- Meta-test classes (never seen in meta-training): {test_names}",
        f"- Template: `{meta['template']}`",
        f"- Prompt: {_prompt_words(meta)}; PEFT method: `{meta['peft_method']}`; verbalizer: "
        f"`{meta['verbalizer']['kind']}`"
        + (f" (temperature {meta['verbalizer']['temperature']:.4g})" if "temperature" in meta["verbalizer"] else ""),
        f"- Trained at commit `{meta['training'].get('commit') or 'unknown'}`; exported at commit `{meta['commit']}`",
    ]
    metrics = meta.get("metrics") or {}
    rows = [k for k in metrics if isinstance(metrics[k], dict) and "accuracy_mean" in metrics[k]]
    if rows:
        adaptation = metrics.get("adaptation") or {}
        lines += ["", f"## Meta-test accuracy ({metrics.get('n_way')}-way {metrics.get('k_shot')}-shot, "
                      f"{metrics.get('n_episodes')} fixed episodes, mean ± 95% CI)", "",
                  "| init | accuracy (%) |", "|---|---|"]
        for key in rows:
            m = metrics[key]
            lines.append(f"| {key} | {fmt_pct(m['accuracy_mean'], m['accuracy_ci95'])} |")
        if adaptation:
            lines += ["", f"Adaptation per episode: {adaptation.get('mode')}, {adaptation.get('steps')} steps, "
                          f"lr {adaptation.get('lr')} (`metaprompt eval`)."]
    lines += ["", "## Files", ""]
    lines.append("- `init.safetensors` + `metaprompt.json`: the native init; `metaprompt.load_init(DIR)` or "
                 "`metaprompt load DIR`.")
    if peft is not None:
        lines += ["", "## Use with Hugging Face peft", ""]
        if not peft.get("available"):
            lines.append(f"No peft adapter: {peft['reason']}.")
        else:
            lines += _peft_card(peft, meta)
    lines += ["", "## Verbalizer", "", _verbalizer_card(meta), "",
              "<details><summary>Config</summary>", "", "```json", json.dumps(meta["config"], indent=1), "```",
              "", "</details>", ""]
    return "\n".join(lines)


def _prompt_words(meta: dict[str, Any]) -> str:
    prompt = meta["prompt"]
    if prompt["length"] == 0:
        return "none"
    return f"`{prompt['kind']}`, {prompt['length']} tokens"


def _peft_card(peft: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    lines = []
    if not peft["adapter"]:
        if peft.get("base_model_dir"):
            lines.append(f"No adapter: the learned weights are a whole model in `{peft['base_model_dir']}/`; load "
                         f"it with `{peft['auto_class']}.from_pretrained(DIR/{peft['base_model_dir']})`.")
        else:
            lines.append("No adapter: only the verbalizer was meta-learned; use the base model as it is.")
    else:
        lines.append(f"peft type `{peft['peft_type']}` (`adapter_config.json` + `adapter_model.safetensors`), "
                     f"task type `{peft['task_type']}`.")
        if peft.get("base_model_dir"):
            lines.append(f"The backbone weights were meta-learned too: the base model is `{peft['base_model_dir']}/` "
                         "(a transformers model directory), not the original checkpoint.")
        if peft.get("backbone_adapter") == BACKBONE_ADAPTER_DIR:
            lines.append(f"The {peft['backbone_peft_type']} adapter is in `{BACKBONE_ADAPTER_DIR}/`; merge it into "
                         "the base model before loading the prompt adapter.")
        if peft.get("reparameterisation"):
            lines.append(f"Note: {peft['reparameterisation']}.")
    lines += ["", "```python", "import json, torch", "from peft import PeftModel",
              f"from transformers import AutoTokenizer, {peft['auto_class']}", "",
              "meta = json.load(open(f'{DIR}/metaprompt.json'))", "p = meta['peft']"]
    if peft.get("base_model_dir"):
        lines.append(f"model = {peft['auto_class']}.from_pretrained(f'{{DIR}}/{peft['base_model_dir']}')")
    else:
        lines.append(f"model = {peft['auto_class']}.from_pretrained(BASE)  # BASE: the base model above")
    if peft.get("backbone_adapter") == BACKBONE_ADAPTER_DIR:
        lines.append(f"model = PeftModel.from_pretrained(model, f'{{DIR}}/{BACKBONE_ADAPTER_DIR}').merge_and_unload()")
    if peft.get("prompt_peft_type"):
        lines.append("model = PeftModel.from_pretrained(model, DIR)  # to tune it further: see below")
    elif peft.get("backbone_adapter") == ".":
        lines.append("model = PeftModel.from_pretrained(model, DIR)  # is_trainable=True to tune it further")
    lines += ["tok = AutoTokenizer.from_pretrained(BASE)", "spec = p['input_ids']",
              "text = (' ' if spec['text_leading_space'] else '') + TEXT",
              "ids = spec['before_text'] + tok(text, add_special_tokens=False, truncation=True,",
              "                                max_length=spec['text_max_tokens']).input_ids + spec['after_text']",
              "kwargs = {'input_ids': torch.tensor([ids]),",
              "          'attention_mask': torch.ones(1, len(ids), dtype=torch.long)}"]
    if peft.get("position_ids"):
        lines.append("kwargs['position_ids'] = p['position_ids']['start'] + torch.arange(len(ids))[None]")
    lines += ["out = model(**kwargs, output_hidden_states=True)",
              "at = ids.index(p['mask_token_id']) + p['output_offset']",
              "h = out.hidden_states[-1][0, at]  # the [MASK] state; MLM logits: out.logits[0, at]", "```", ""]
    if peft.get("prompt_peft_type"):
        lines += ["To tune the prompt further, build a trainable peft model and load the weights into it "
                  "(`PeftModel.from_pretrained(..., is_trainable=True)` refuses prompt adapters):", "",
                  "```python", "from peft import PeftConfig, get_peft_model, set_peft_model_state_dict",
                  "from safetensors.torch import load_file", "config = PeftConfig.from_pretrained(DIR)",
                  "config.inference_mode = False", "model = get_peft_model(base_model, config)",
                  "set_peft_model_state_dict(model, load_file(f'{DIR}/adapter_model.safetensors'))", "```", ""]
    if peft.get("prompt_peft_type") == "PROMPT_TUNING":
        lines.append(f"The first {len(peft['start_token_ids'])} virtual token(s) hold the input embedding of the "
                     "tokenizer's start token ([CLS] / <s>), which peft would otherwise put after the prompt; "
                     "`before_text` therefore does not contain it.")
    if peft.get("position_ids"):
        lines.append(f"Positions: {peft['position_ids']['rule']}.")
    if peft["exact"]:
        check = peft.get("verified_max_abs_diff")
        checked = f" (checked at export: max |Δ| of the [MASK] states {check:.1e})." if check is not None else "."
        lines.append("This reproduces metaprompt's classifier exactly" + checked)
    else:
        lines.append(f"**Not exact:** {peft['not_exact_because']}. Equivalent metaprompt template: "
                     f"`{peft['equivalent_template']}`.")
    return lines


def _verbalizer_card(meta: dict[str, Any]) -> str:
    from metaprompt.verbalizers import VERBALIZERS

    v = meta["verbalizer"]
    words = "`metaprompt.json` has the label words of every class (`label_words`) and their word-piece ids " \
            "(`label_word_ids`)."
    if v["kind"] not in VERBALIZERS:  # an export read by a version without this kind
        return words
    return f"{VERBALIZERS.get(v['kind']).card(v)} {words}"
