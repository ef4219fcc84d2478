"""generate() and `python sample.py` on a real (tiny) checkpoint."""

import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from seqlab.data import TextDataModule, Vocab
from seqlab.models import GRU, LSTM, RNN, PaddedMLP, WindowMLP
from seqlab.training.sampling import encode_prompt, generate
from seqlab.training.system import LanguageModel

ROOT = Path(__file__).resolve().parents[1]
TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n" * 40


def test_generate_is_seeded_and_extends_the_prompt():
    torch.manual_seed(0)
    model = WindowMLP(7, 8, hidden_size=16, emb_dim=4, window=3)
    prompt = torch.tensor([[1, 2, 3]])

    def run(seed: int) -> torch.Tensor:
        return generate(model, prompt, 20, 1.0, torch.Generator().manual_seed(seed))

    out = run(0)
    assert out.shape == (1, 23) and (out[:, :3] == prompt).all()
    assert torch.equal(out, run(0)) and not torch.equal(out, run(1))


def test_low_temperature_is_greedy():
    torch.manual_seed(0)
    model = WindowMLP(7, 8, hidden_size=16, emb_dim=4, window=3)
    out = generate(model, torch.tensor([[1, 2, 3]]), 10, 1e-4, torch.Generator().manual_seed(0))
    greedy = torch.tensor([[1, 2, 3]])
    for _ in range(10):
        greedy = torch.cat([greedy, model(greedy)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, greedy)


def test_context_is_cropped_for_models_with_a_fixed_length():
    model = PaddedMLP(7, 8, hidden_size=16, emb_dim=4)  # sees at most 8 tokens
    out = generate(model, torch.tensor([[1, 2]]), 20, 1.0, context_length=8)
    assert out.shape == (1, 22)
    with pytest.raises(ValueError, match="at most 8"):
        generate(model, torch.tensor([[1, 2]]), 20, 1.0)
    with pytest.raises(ValueError, match="temperature"):
        generate(model, torch.tensor([[1, 2]]), 1, 0.0)


RECURRENT = {
    "rnn": lambda: RNN(7, 8, hidden_size=16, emb_dim=4),
    "lstm": lambda: LSTM(7, 8, hidden_size=16, emb_dim=4, num_layers=2),
    "gru": lambda: GRU(7, 8, hidden_size=16, emb_dim=4, num_layers=3, residual=True),
}


@pytest.mark.parametrize("name", RECURRENT)
def test_streaming_equals_full_forward_past_the_context(name):
    """One step per token on the carried state draws the same tokens as re-reading the whole, uncropped
    sequence for every token, far past the training context (8 here)."""
    torch.manual_seed(0)
    model = RECURRENT[name]().double().eval()
    prompt = torch.tensor([[1, 2, 3], [4, 5, 6]])
    streamed = generate(model, prompt, 40, 0.9, torch.Generator().manual_seed(7), context_length=8)
    generator, idx = torch.Generator().manual_seed(7), prompt
    with torch.no_grad():
        for _ in range(40):
            probs = torch.softmax(model(idx)[:, -1].float() / 0.9, dim=-1)  # the whole history, every time
            idx = torch.cat([idx, torch.multinomial(probs, 1, generator=generator)], dim=1)
    assert streamed.shape == (2, 43)
    assert torch.equal(streamed, idx)


def test_streaming_reads_every_token_once():
    """Cost per token does not grow with position: the embedding sees the prompt once and each new token once
    (the last needs no step); a feedforward model re-reads its cropped window for every token."""
    seen = []
    rnn, mlp = RNN(7, 8, hidden_size=16, emb_dim=4), WindowMLP(7, 8, hidden_size=16, emb_dim=4)
    for model in (rnn, mlp):
        model.tok_emb.register_forward_hook(lambda m, args, out: seen.append(args[0].numel()))
    generate(rnn, torch.tensor([[1, 2, 3]]), 100, context_length=8)
    assert seen == [3] + [1] * 99
    seen.clear()
    generate(mlp, torch.tensor([[1, 2, 3]]), 100, context_length=8)
    assert sum(seen) == sum(min(3 + i, 8) for i in range(100))


def test_encode_prompt_maps_unknown_to_unk_and_empty_to_a_line_start():
    vocab = Vocab.from_tokens(list("ab\n"), "char")
    ids, unknown = encode_prompt(vocab, "abz")
    assert ids.tolist() == [[vocab.index["a"], vocab.index["b"], vocab.unk_id]] and unknown == ["z"]
    ids, unknown = encode_prompt(vocab, "")
    assert ids.tolist() == [[vocab.index["\n"]]] and unknown == []


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("ckpt")
    (tmp / "tiny.txt").write_text(TEXT)
    dm = TextDataModule("text_file", path=str(tmp / "tiny.txt"), context_length=16, batch_size=8)
    dm.setup("fit")
    system = LanguageModel(
        model={"_target_": "seqlab.models.RNN", "hidden_size": 32, "emb_dim": 16},
        optim={"_target_": "torch.optim.AdamW", "lr": 1e-2},
        vocab_size=dm.vocab_size,
        context_length=16,
    )
    system.vocab = dm.vocab
    trainer = L.Trainer(
        max_steps=30, logger=False, enable_checkpointing=False, enable_progress_bar=False, limit_val_batches=0
    )
    trainer.fit(system, datamodule=dm)
    trainer.save_checkpoint(tmp / "model.ckpt")
    return tmp / "model.ckpt"


def _sample(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(ROOT / "sample.py"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.slow
def test_sample_cli_generates_from_a_checkpoint(checkpoint):
    args = ("--prompt", "First", "--length", "50", "--seed", "3", "--temperature", "0.5")
    result = _sample(str(checkpoint), *args)
    assert result.returncode == 0, result.stderr
    text = result.stdout.removesuffix("\n")
    text = text.replace("<unk>", "?")  # the one token longer than a char
    assert text.startswith("First") and len(text) == len("First") + 50
    assert set(text) <= set(TEXT) | {"?"}  # the checkpoint's own vocabulary
    again = _sample(str(checkpoint), *args)
    assert again.stdout == result.stdout  # same seed, same text

    unknown = _sample(str(checkpoint), "--prompt", "Zq", "--length", "5")
    assert unknown.returncode == 0 and "not in the vocabulary" in unknown.stderr


@pytest.mark.slow
def test_sample_cli_streams_far_past_the_context(checkpoint):
    """10,000 characters from an RNN trained on 16-character chunks: one step per character."""
    result = _sample(str(checkpoint), "--prompt", "First", "--length", "10000", "--seed", "1")
    assert result.returncode == 0, result.stderr
    text = result.stdout.removesuffix("\n").replace("<unk>", "?")
    assert len(text) == len("First") + 10_000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--temperature", "0"], "--temperature=0.0: must be positive"),
        (["--length", "-1"], "--length=-1: must be zero or more"),
    ],
)
def test_sample_cli_rejects_bad_options(checkpoint, args, message):
    result = _sample(str(checkpoint), *args)
    assert result.returncode != 0
    assert result.stderr.strip() == f"error: {message}"


def test_sample_cli_missing_checkpoint(tmp_path):
    result = _sample(str(tmp_path / "nope.ckpt"))
    assert result.returncode != 0
    assert result.stderr.strip() == f"error: {tmp_path / 'nope.ckpt'}: no such checkpoint file"
