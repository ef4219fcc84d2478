"""A carried state: stream batches, truncated BPTT in training, and the stateful evaluation, against plain loops."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from seqlab.data import TextDataModule
from seqlab.data.datamodule import StreamBatches
from seqlab.errors import ConfigError
from seqlab.system import LanguageModel

V = 40


class TinyLSTM(nn.Module):
    """The recurrent interface in a few lines (the test does not depend on any conf/model choice)."""

    def __init__(self, vocab_size: int, context_length: int, hidden_size: int = 16) -> None:
        super().__init__()
        self.tok_emb = nn.Embedding(vocab_size, 8)
        self.lstm = nn.LSTM(8, hidden_size, num_layers=2, batch_first=True)
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward_with_state(self, idx, state=None):
        out, state = self.lstm(self.tok_emb(idx), state)
        return self.head(out), state

    def forward(self, idx):
        return self.forward_with_state(idx)[0]


TINY = {"_target_": f"{__name__}.TinyLSTM", "hidden_size": 16}


def system(stateful: bool = False, **kwargs) -> LanguageModel:
    optim = {"_target_": "torch.optim.SGD", "lr": 0.5}
    return LanguageModel(TINY, optim, vocab_size=V, context_length=5, stateful=stateful, **kwargs)


def test_stream_batches_continue_every_stream():
    ids = torch.arange(1003)
    batches = StreamBatches(ids, context_length=7, batch_size=4)  # 4 streams of 250; 3 tokens dropped
    xs, ys = zip(*batches, strict=True)
    assert len(xs) == len(batches) == 36  # 249 targets per stream, 7 at a time
    assert [x.shape for x in xs[-2:]] == [(4, 7), (4, 4)]  # the last batch is shorter
    streams = torch.arange(1000).view(4, 250)
    torch.testing.assert_close(torch.cat(xs, 1), streams[:, :-1])  # row b of each batch continues row b
    torch.testing.assert_close(torch.cat(ys, 1), streams[:, 1:])  # every token but a stream's first, once


def test_stream_batches_resume_from_their_state():
    def loader() -> StreamBatches:
        return StreamBatches(torch.arange(500), context_length=6, batch_size=4)

    expected = [x for _ in range(2) for x, _ in loader()]
    first = loader()
    seen = [x for _, (x, _) in zip(range(9), first, strict=False)]  # 9 batches, then the "kill"
    assert first.state_dict() == {"epoch": 0, "batch": 9}
    resumed = loader()
    resumed.load_state_dict(first.state_dict())
    seen += [x for x, _ in resumed] + [x for x, _ in resumed]  # the rest of pass 0, then pass 1
    assert len(seen) == len(expected) == 42
    assert all(torch.equal(a, b) for a, b in zip(seen, expected, strict=True))


def test_stateful_training_is_truncated_bptt_of_a_plain_loop():
    """Two epochs through the system equal a plain loop: carry, detach, restart the streams at each epoch."""
    torch.manual_seed(0)
    ids = torch.randint(V, (400,))
    sys_ = system(stateful=True)
    reference = TinyLSTM(V, 5)
    reference.load_state_dict(sys_.model.state_dict())

    optimizer = torch.optim.SGD(reference.parameters(), lr=0.5)
    for _ in range(2):
        state = None
        for x, y in StreamBatches(ids, context_length=5, batch_size=4):
            logits, state = reference.forward_with_state(x, state)
            state = tuple(s.detach() for s in state)
            loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    loader = StreamBatches(ids, context_length=5, batch_size=4)
    trainer = L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(sys_, train_dataloaders=loader)
    for (name, a), b in zip(sys_.model.state_dict().items(), reference.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=name)


@pytest.fixture
def datamodule(tiny_text: Path) -> TextDataModule:
    dm = TextDataModule(corpus="text_file", path=str(tiny_text), context_length=16, batch_size=6)
    dm.setup()
    dm.stream_eval = True
    return dm


@pytest.fixture
def float64():
    torch.set_default_dtype(torch.float64)  # the model and the metrics' running sums alike
    yield
    torch.set_default_dtype(torch.float32)


def test_stateful_eval_equals_one_long_pass_per_stream(datamodule: TextDataModule, float64: None):
    torch.manual_seed(0)
    sys_ = LanguageModel(TINY, {"_target_": "torch.optim.SGD", "lr": 0.1}, datamodule.vocab_size, context_length=16)
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    results = trainer.validate(sys_, datamodule=datamodule, verbose=False)
    metrics = {k: v for r in results for k, v in r.items()}

    ids = datamodule.ids["val"]
    streams = ids[: len(ids) // 6 * 6].view(6, -1)  # (6, L): the split as 6 contiguous streams
    with torch.no_grad():
        logits = torch.cat([sys_.model(row[None, :-1]) for row in streams])  # each stream in one long pass
    expected = F.cross_entropy(logits.flatten(0, 1), streams[:, 1:].flatten(), reduction="mean")
    assert metrics["val/loss_stateful"] == pytest.approx(expected.item(), rel=1e-12)
    assert metrics["val/ppl_stateful"] == pytest.approx(expected.exp().item(), rel=1e-12)
    # the chunked metric is still there, and the carried history helps even an untrained model a little or not at all
    assert {"val/loss", "val/ppl", "val/bpc_stateful"} <= metrics.keys()


def test_stateful_needs_a_recurrent_model():
    optim = {"_target_": "torch.optim.SGD", "lr": 0.1}
    with pytest.raises(ConfigError, match=r"data.stateful=true: Unigram carries no state"):
        LanguageModel({"_target_": "seqlab.models.Unigram"}, optim, vocab_size=V, context_length=5, stateful=True)


def test_stateful_needs_enough_train_text_for_the_streams(tiny_text: Path):
    dm = TextDataModule(corpus="text_file", path=str(tiny_text), context_length=64, batch_size=500, stateful=True)
    with pytest.raises(ConfigError, match=r"data.batch_size=500: data.stateful=true splits the train split"):
        dm.setup()
