"""metaprompt: meta-learned soft-prompt initialisations for few-shot text classification."""
__version__ = "0.1.0"

__all__ = ["load_init"]


def __getattr__(name: str):
    # Lazy: `import metaprompt` stays light (no torch) until the API is used.
    if name == "load_init":
        from metaprompt.load import load_init

        return load_init
    raise AttributeError(f"module 'metaprompt' has no attribute {name!r}")
