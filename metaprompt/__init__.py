"""metaprompt: meta-learned soft-prompt initialisations for few-shot text classification.

>>> import metaprompt as mp                                                   # doctest: +SKIP
>>> backbone = mp.Backbone.from_pretrained("minilm-offline")                  # doctest: +SKIP
>>> clf = mp.PromptClassifier(backbone, mp.Template("{text} . [P] topic is [MASK] ."),
...                           mp.prompts.SoftPrompt(length=8), mp.verbalizers.Soft())  # doctest: +SKIP

The README's "Python API" section has the whole loop. Names are imported on first use, so
``import metaprompt`` stays light (no torch).
"""
import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "Backbone": "metaprompt.model.backbone",
    "Template": "metaprompt.model.template",
    "PromptClassifier": "metaprompt.model.classifier",
    "Task": "metaprompt.model.classifier",
    "EpisodeData": "episodes.episode_data",
    "TextTask": "episodes.episode_data",
    "Learner": "metaprompt.meta.learners",
    "MAML": "metaprompt.meta.learners",
    "FOMAML": "metaprompt.meta.learners",
    "MAMLpp": "metaprompt.meta.learners",
    "Reptile": "metaprompt.meta.learners",
    "ProtoNet": "metaprompt.meta.learners",
    "evaluate": "metaprompt.evaluation",
    "EvaluationResult": "metaprompt.evaluation",
    "save_init": "metaprompt.inits",
    "load_init": "metaprompt.inits",
    "export_peft": "metaprompt.inits",
    "MetaTrainer": "metaprompt.run.trainer",
}
# sub-packages reachable as attributes (mp.prompts.SoftPrompt, ...)
_PACKAGES = ("prompts", "verbalizers", "tuners")

__all__ = sorted(_EXPORTS) + list(_PACKAGES)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _PACKAGES:
        value = importlib.import_module(f"metaprompt.{name}")
    else:
        raise AttributeError(f"module 'metaprompt' has no attribute {name!r}")
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
