import os
import tempfile

# Tests never reach the hub or wandb, and keep their caches out of the user's home.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "disabled"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("METAPROMPT_CACHE", tempfile.mkdtemp(prefix="metaprompt-test-cache-"))

import pytest  # noqa: E402
import torch  # noqa: E402

from tests.tiny import save_tiny_model, write_tiny_dataset  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


def pytest_configure(config):
    # registered here, not in pyproject.toml, whose every change rebuilds the locked venv
    config.addinivalue_line("markers", "docs: checks that README.md and docs/ say what the repository holds and "
                                       "quote the committed figures (run as a step of their own: -m docs)")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """(data file, split file) of the 12-class synthetic data set."""
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny_data"))


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Build tiny random models on first use: tiny_models("bert"), tiny_models("bert", mlm_head=False)."""
    built = {}

    def get(family: str = "bert", mlm_head: bool = True):
        key = (family, mlm_head)
        if key not in built:
            built[key] = save_tiny_model(family, tmp_path_factory.mktemp(f"{family}_{int(mlm_head)}"), mlm_head)
        return str(built[key])

    return get


def tiny_overrides(data, model_dir, **extra):
    """--set style overrides for a fast run on the tiny data and model."""
    path, splits = data
    base = {
        "data.dataset": "custom", "data.path": str(path), "data.splits": str(splits),
        "data.n_way": 3, "data.k_shot": 2, "data.n_query": 4, "data.max_text_tokens": 16,
        "model.name": model_dir, "model.max_length": 48,
        "prompt.length": 2, "prompt.init_text": "the topic",
        "meta.inner_steps": 2, "meta.inner_lr": 0.1,
        "train.episodes": 4, "train.val_every": 2, "train.val_episodes": 2, "train.checkpoint_every": 1,
        "eval.episodes": 3, "log.progress": False,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


@pytest.fixture
def tiny_config(tiny_data, tiny_models):
    from metaprompt.config import Config

    def make(family="bert", mlm_head=True, **extra):
        return Config.load(None, tiny_overrides(tiny_data, tiny_models(family, mlm_head), **extra))

    return make


@pytest.fixture
def keep_torch_threads():
    """Restore torch's thread count after a test that runs the CLI in-process (``threads=1``)."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
