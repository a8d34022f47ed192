"""End to end on the real benchmark: prepare lo-de-en -> tiny pre-train -> fine-tune -> generate (two orders) ->
evaluate. Minutes on 2 CPU cores: a slice of the data, a tiny model, few steps. Quality cannot be asserted at this
size; the test asserts the pipeline's files, sacrebleu lines with signatures, BLEU in [0, 100], and that the
fine-tuning loss went down."""

import dataclasses
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from plmgen.config import DataConfig, ExperimentConfig, ModelConfig, ObjectiveConfig, TrainConfig

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.network]  # network only when the Debian packages are not cached yet


class LossLog:
    """Lightning callback: the seq2seq loss term of every training step."""

    def __new__(cls):
        import lightning as L

        class _Log(L.Callback):
            def __init__(self):
                self.losses = []

            def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
                self.losses.append(float(trainer.callback_metrics["train/seq2seq"]))

        return _Log()


def cli(*args) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    return r


def bleu_of(text: str) -> float:
    m = re.search(r"^BLEU = ([0-9.]+) .*signature: nrefs:1\|case:mixed\|eff:no\|tok:13a\|smooth:exp\|version:", text, re.M)
    assert m, text
    assert re.search(r"^chrF = [0-9.]+ +signature: nrefs:1", text, re.M), text
    return float(m.group(1))


def test_prepare_pretrain_finetune_generate_evaluate(tmp_path):
    from plmgen.data.prepare import prepare
    from plmgen.train import run_training

    data = prepare("lo-de-en", out=str(tmp_path / "lo-de-en"), quiet=True)
    tiny = dict(vocab_size=1000, d_model=64, n_layer=2, n_head=4, d_inner=128, dropout=0.0, dropatt=0.0)

    pre = ExperimentConfig(
        name="pre", out_dir=str(tmp_path / "pre"), model=ModelConfig(**tiny, mem_len=32),
        objective=ObjectiveConfig(name="plm", K=6.0),
        data=DataConfig(kind="pretrain", path=str(data), seq_len=64, batch_size=8, val_batches=2),
        train=TrainConfig(max_steps=20, val_every=20, warmup_steps=2, lr=1e-3, progress_bar=False))
    pre_ckpt = run_training(pre).run_dir / "checkpoints" / "last.ckpt"
    assert pre_ckpt.is_file()

    log = LossLog()
    ft = ExperimentConfig.from_yaml(ROOT / "experiments" / "configs" / "finetune-tiny.yaml")  # the shipped smoke config
    ft = dataclasses.replace(ft, out_dir=str(tmp_path / "ft"), data=dataclasses.replace(ft.data, path=str(data)),
                             train=dataclasses.replace(ft.train, progress_bar=False))
    ft_ckpt = run_training(ft, init_from=str(pre_ckpt), callbacks=[log]).run_dir / "checkpoints" / "last.ckpt"
    first, last = sum(log.losses[:5]) / 5, sum(log.losses[-5:]) / 5
    assert len(log.losses) == ft.train.max_steps and last < first, (first, last)

    bleus = {}
    for order in ("l2r", "confidence"):
        hyp, trace = tmp_path / f"{order}.txt", tmp_path / f"{order}.jsonl"
        r = cli("generate", "--checkpoint", str(ft_ckpt), "--split", "test", "--data", str(data), "--limit", "24",
                "--order", order, "--length", "predict", "--out", str(hyp), "--trace", str(trace), "--evaluate", "true",
                "--quiet", "true")
        assert len(hyp.read_text(encoding="utf-8").splitlines()) == 24
        assert len(trace.read_text(encoding="utf-8").splitlines()) == 24
        bleus[order] = bleu_of(r.stdout)

    ref = tmp_path / "ref.en"
    ref.write_text("".join(l + "\n" for l in (data / "test.en").read_text(encoding="utf-8").splitlines()[:24]),
                   encoding="utf-8")
    r = cli("evaluate", "--hyp", str(tmp_path / "l2r.txt"), "--ref", str(ref))
    assert bleu_of(r.stdout) == pytest.approx(bleus["l2r"])  # the evaluate command agrees with generate --evaluate
    for b in bleus.values():
        assert math.isfinite(b) and 0.0 <= b <= 100.0
