"""metaprompt: meta-learned soft-prompt initialisations for few-shot text classification."""
__version__ = "0.1.0"
