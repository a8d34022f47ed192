"""generate with a tiny prefix-lm checkpoint (trainer API, few steps): the AR decoder behind the same command."""

import pytest

from plmgen.config import DataConfig, ExperimentConfig, ModelConfig, ObjectiveConfig, TrainConfig
from plmgen.decoding.generate import generate
from plmgen.errors import UserError
from train_helpers import make_dataset, make_tokenizer


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from plmgen.train import run_training

    root = tmp_path_factory.mktemp("gen-ar")
    data = make_dataset(root, n_train=64, n_dev=8)
    tok = make_tokenizer(root, data)
    cfg = ExperimentConfig(
        name="ar", out_dir=str(root / "run"), tokenizer=str(tok.path),
        model=ModelConfig.named("tiny", vocab_size=tok.vocab_size, mem_len=0),
        objective=ObjectiveConfig(name="prefix-lm"),
        data=DataConfig(kind="parallel", path=str(data), seq_len=64, batch_size=8),
        train=TrainConfig(max_steps=4, val_every=4, warmup_steps=0, progress_bar=False, log_every=1),
    )
    return run_training(cfg).run_dir / "checkpoints" / "last.ckpt"


def test_generate_greedy_beam_sample_with_evaluate(ckpt, capsys):
    kw = dict(checkpoint=str(ckpt), split="dev", limit=5, quiet=True)
    greedy = generate(**kw, evaluate=True)[0]
    printed = capsys.readouterr().out
    assert "BLEU = " in printed and "chrF = " in printed
    assert len(greedy.hyps) == 5 and all(h.tokens for h in greedy.hypotheses)  # never empty: </s> banned first
    assert greedy.order == "l2r" and greedy.length == "predict"
    assert all(h.steps == len(h.tokens) + 1 for h in greedy.hypotheses)
    assert len(generate(**kw, beam=3)[0].hyps) == 5
    a, b = generate(**kw, sample=True, seed=1)[0].hyps, generate(**kw, sample=True, seed=1)[0].hyps
    assert a == b


def test_generate_fixed_length_and_orders_grid(ckpt, tmp_path):
    run = generate(checkpoint=str(ckpt), split="dev", limit=3, length="4", quiet=True)[0]
    assert [len(h.tokens) for h in run.hypotheses] == [4, 4, 4]
    runs = generate(checkpoint=str(ckpt), split="dev", limit=3, orders="l2r", lengths="predict,oracle",
                    out=str(tmp_path / "grid"), quiet=True)
    assert [(r.order, r.length) for r in runs] == [("l2r", "predict"), ("l2r", "oracle")]
    assert (tmp_path / "grid" / "orders.md").is_file()


@pytest.mark.parametrize("kwargs,match", [
    (dict(order="r2l"), r"--order r2l: a prefix-lm checkpoint decodes left to right only"),
    (dict(order="parallel@2"), r"--order parallel@2"),
    (dict(refine_iters=2), "--refine_iters"),
    (dict(length_beam=3), "--length_beam"),
])
def test_generate_rejects_what_ar_cannot_do(ckpt, kwargs, match):
    with pytest.raises(UserError, match=match) as e:
        generate(checkpoint=str(ckpt), split="dev", limit=2, quiet=True, **kwargs)
    assert "\n" not in str(e.value)
