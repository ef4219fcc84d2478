from seqlab.launch.openmp import sleep_when_idle

# before any test imports torch: tests run torch outside train() (which picks its threads from the free cores,
# seqlab.launch.threads) on a machine shared with other jobs, where 2 spinning threads collapse
sleep_when_idle()

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
# the quick start's download dir (conf/paths/default.yaml: ./data in the checkout, or SEQLAB_DATA_DIR), so a user
# who ran the quick start also runs the tests that need a whole corpus
DATA_DIR = Path(os.environ.get("SEQLAB_DATA_DIR", ROOT / "data"))
SHAKESPEARE = DATA_DIR / "tinyshakespeare" / "input.txt"
# committed with the tests: the first 60 kB of Tiny Shakespeare (public domain; karpathy/char-rnn's input.txt)
SAMPLE = Path(__file__).parent / "data" / "tinyshakespeare_head.txt"


@pytest.fixture(scope="session")
def shakespeare_text() -> str:
    """The whole corpus, for tests whose point is Tiny Shakespeare itself (its splits, its counts)."""
    if not SHAKESPEARE.is_file():
        pytest.skip(f"Tiny Shakespeare not found under {DATA_DIR}: run the quick start, or set SEQLAB_DATA_DIR")
    return SHAKESPEARE.read_text()


@pytest.fixture(scope="session")
def sample_text() -> str:
    """~60k chars of real text, always here (tests/data/): for every test that needs some text, not the corpus."""
    return SAMPLE.read_text()


@pytest.fixture
def tiny_text(tmp_path: Path, sample_text: str) -> Path:
    """~30k chars of real text: enough for a few chunks in every split, small enough to train in seconds."""
    path = tmp_path / "tiny.txt"
    path.write_text(sample_text[:30_000])
    return path


def compose_config(overrides: list[str], output_dir: Path) -> DictConfig:
    """The config `python train.py <overrides>` would run, composed in-process (no subprocess start-up cost)."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.data_dir = str(DATA_DIR)
        cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig().set_config(cfg)
    return cfg


@pytest.fixture(scope="session")
def slurm_cluster() -> str:
    """A SLURM cluster that answers (scripts/slurm_local.sh's, started by .ci/run), else a skip that says why.
    Points SLURM_CONF at the local cluster's config when none is set."""
    import shutil
    import subprocess

    if shutil.which("sbatch") is None:
        pytest.skip("no sbatch: apt-get install slurm-wlm munge, then scripts/slurm_local.sh start (.ci/run does)")
    local_conf = Path(os.environ.get("SEQLAB_SLURM_DIR", "/tmp/seqlab-slurm")) / "slurm.conf"
    if "SLURM_CONF" not in os.environ and local_conf.is_file():
        os.environ["SLURM_CONF"] = str(local_conf)
    answer = subprocess.run(["sinfo", "-h", "-o", "%P %a"], capture_output=True, text=True, timeout=30)
    if answer.returncode != 0 or not answer.stdout.strip():
        pytest.skip(
            f"sbatch is here but no SLURM cluster answers ({answer.stderr.strip()}): scripts/slurm_local.sh start"
        )
    return answer.stdout.split()[0].rstrip("*")  # the default partition


@pytest.fixture(autouse=True, scope="session")
def _encoded_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The encoded-corpus cache (seqlab.data.encoded) in a fresh dir: tests neither read nor fill ~/.cache."""
    os.environ["SEQLAB_CACHE_DIR"] = str(tmp_path_factory.mktemp("seqlab_cache"))
