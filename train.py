"""Train one model, or sweep many with -m. Examples: `python train.py model=rnn`, `python train.py -m experiment=baselines`."""

import hydra
from omegaconf import DictConfig

import seqlab.launch.slurm  # noqa: F401 (registers `${seqlab.slurm_or:...}` for conf/hydra: a run dir named by the SLURM job)


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from seqlab.training.run import train  # imported here so `--help` and config errors answer fast

    return train(cfg).get("best_val_loss")  # a sweeper (e.g. Optuna) minimises this


if __name__ == "__main__":
    main()
