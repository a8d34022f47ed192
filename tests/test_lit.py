"""PLMModule + the Lightning run: learning, memory across batches, resume, non-finite loss, optimiser groups."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from train_helpers import StandInObjective, make_dataset, make_tokenizer

from plmgen.config import DataConfig, ExperimentConfig, ModelConfig, TrainConfig
from plmgen.lit import PLMModule, make_optimizer, param_groups, warmup_linear
from plmgen.model import XLNet
from plmgen.train import run_training


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("lit")
    data = make_dataset(root)
    return data, make_tokenizer(root, data).path


@pytest.fixture(scope="module")
def small_assets(tmp_path_factory, assets):
    """A corpus so short that 16 streams wrap after a few batches."""
    return make_dataset(tmp_path_factory.mktemp("small"), n_train=12), assets[1]


def config(assets, tmp_path, batch_size=4, **train) -> ExperimentConfig:
    data, tok = assets
    model = ModelConfig.named("tiny", vocab_size=120, mem_len=8)
    t = TrainConfig(**{**dict(max_steps=6, lr=3e-3, warmup_steps=2, val_every=3, log_every=1, progress_bar=False,
                              accelerator="cpu", devices=1), **train})
    return ExperimentConfig(name="t", out_dir=str(tmp_path / "run"), tokenizer=tok, model=model,
                            data=DataConfig(path=str(data), seq_len=24, batch_size=batch_size, val_batches=2, reuse_len=8),
                            train=t)


class Record(L.Callback):
    def __init__(self):
        self.losses, self.start = [], None

    def on_train_start(self, trainer, module):
        opt = trainer.optimizers[0]
        self.start = dict(step=trainer.global_step, next_batch=trainer.datamodule.next_batch,
                          opt={k: {n: v.clone() for n, v in s.items()} for k, s in opt.state_dict()["state"].items()},
                          lr=opt.param_groups[0]["lr"])

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


def test_loss_decreases(assets, tmp_path):
    rec = Record()
    run_training(config(assets, tmp_path, max_steps=30, val_every=30), objective=StandInObjective(), callbacks=[rec])
    first, last = sum(rec.losses[:5]) / 5, sum(rec.losses[-5:]) / 5
    assert last < first - 0.5, (first, last)


def test_mems_carry_across_batches_and_reset_with_the_stream(small_assets, tmp_path):
    obj = StandInObjective()
    cfg = config(small_assets, tmp_path, batch_size=16, max_steps=8, val_every=4)
    result = run_training(cfg, objective=obj)
    chunks = result.trainer.datamodule.train_dataloader().dataset.chunks_per_pass
    assert chunks < 8  # the run wraps the streams at least once
    train = [(k, m, out) for training, k, m, out in obj.seen_mems if training]
    assert [k for k, _, _ in train] == list(range(8))
    for (k, mems, _), (_, _, prev_out) in zip(train[1:], train[:-1]):
        if k % chunks == 0:
            assert mems is None, f"batch {k} starts the streams again but got memory"
            continue
        assert mems is not None, f"batch {k} continues batch {k - 1} but got no memory"
        assert len(mems) == cfg.model.n_layer and mems[0].shape == (16, 8, cfg.model.d_model)
        assert all(torch.equal(m, p) for m, p in zip(mems, prev_out)) and not mems[0].requires_grad
    val = [m for training, _, m, _ in obj.seen_mems if not training]
    assert len(val) >= 2 and all(m is None for m in val)  # validation never uses the training memory


class StopAt(L.Callback):
    def __init__(self, step):
        self.step = step

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        trainer.should_stop = trainer.global_step >= self.step


@pytest.mark.parametrize("mem_len", [0, 8])
def test_resume_continues_steps_optimizer_and_data(assets, tmp_path, mem_len):
    """6 steps + resume to 9 == 9 uninterrupted steps, with and without Transformer-XL memory (checkpointed too)."""
    def cfg(path, steps):
        c = config(assets, path, max_steps=steps)
        c.model.mem_len = mem_len
        return c

    straight = run_training(cfg(tmp_path / "a", 9), objective=StandInObjective())
    first = run_training(cfg(tmp_path / "b", 9), objective=StandInObjective(), callbacks=[StopAt(6)])  # "crash" at 6
    ckpt = torch.load(tmp_path / "b" / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 6 and ckpt["PLMDataModule"] == {"next_batch": 6}
    if mem_len:
        assert ckpt["plmgen_mems"]["world"] == 1 and ckpt["plmgen_mems"]["mems"].shape[:2] == (1, 2)  # 1 rank, 2 layers
    rec = Record()
    resumed = run_training(cfg(tmp_path / "b", 9), objective=StandInObjective(), resume="last", callbacks=[rec])
    assert rec.start["step"] == 6 and rec.start["next_batch"] == 6
    saved = ckpt["optimizer_states"][0]["state"]
    assert saved and len(rec.start["opt"]) == len(saved)
    for i, state in saved.items():
        for name in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(rec.start["opt"][i][name], state[name])
    assert resumed.trainer.global_step == 9
    for (n, a), (_, b) in zip(straight.module.state_dict().items(), resumed.module.state_dict().items()):
        torch.testing.assert_close(a, b, msg=f"{n} differs after resume")
    assert first.trainer.global_step == 6


def test_resume_on_parallel_data_continues_mid_epoch(assets, tmp_path):
    """seq2seq on shuffled pairs: 5 steps + resume to 9 == 9 straight steps, with epochs of 3 batches (so the
    resume lands mid-epoch and the run crosses epoch boundaries)."""
    from plmgen.config import ObjectiveConfig

    def cfg(path):
        c = config(assets, path, max_steps=9, val_every=9)
        c.model.mem_len = 0
        c.objective = ObjectiveConfig(name="seq2seq")
        c.data = DataConfig(path=c.data.path, kind="parallel", seq_len=24, batch_size=4, max_pairs=12,
                            max_val_pairs=8)
        return c

    seen: dict[str, list] = {"a": [], "b": []}

    class Batches(L.Callback):
        def __init__(self, key):
            self.key = key

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            seen[self.key].append((batch["batch_index"], batch["input_ids"].clone()))

    straight = run_training(cfg(tmp_path / "a"), callbacks=[Batches("a")])
    run_training(cfg(tmp_path / "b"), callbacks=[StopAt(5), Batches("b")])
    resumed = run_training(cfg(tmp_path / "b"), resume="last", callbacks=[Batches("b")])
    assert [k for k, _ in seen["b"]] == list(range(9)) == [k for k, _ in seen["a"]]
    assert all(torch.equal(x, y) for (_, x), (_, y) in zip(seen["a"], seen["b"]))
    assert not torch.equal(seen["a"][0][1], seen["a"][3][1])  # each epoch reshuffles
    for (n, a), (_, b) in zip(straight.module.state_dict().items(), resumed.module.state_dict().items()):
        torch.testing.assert_close(a, b, msg=f"{n} differs after resume")


def test_existing_run_needs_resume(assets, tmp_path):
    from plmgen.errors import UserError

    run_training(config(assets, tmp_path, max_steps=1), objective=StandInObjective())
    with pytest.raises(UserError, match="--resume last"):
        run_training(config(assets, tmp_path, max_steps=2), objective=StandInObjective())


def test_resume_refuses_changed_settings_and_bad_checkpoints(assets, tmp_path):
    """--resume with another lr/objective or a damaged last.ckpt: one UserError naming the keys, run folder
    untouched; max_steps may change (and is recorded)."""
    from plmgen.errors import UserError

    run_training(config(assets, tmp_path, max_steps=1), objective=StandInObjective())
    run_dir = tmp_path / "run"
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    changed = config(assets, tmp_path, max_steps=2)
    changed.train.lr, changed.objective.name = 0.5, "dae"
    with pytest.raises(UserError, match=r"objective.name \('plm' -> 'dae'\), train.lr") as e:
        run_training(changed, objective=StandInObjective(), resume="last")
    assert "max_steps" in str(e.value)  # names what may change
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    ckpt.write_bytes(before[ckpt][: len(before[ckpt]) // 2])  # truncated by a crash of something else
    with pytest.raises(UserError, match="not a readable checkpoint"):
        run_training(config(assets, tmp_path, max_steps=2), objective=StandInObjective(), resume="last")
    ckpt.write_bytes(before[ckpt])
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before
    resumed = run_training(config(assets, tmp_path, max_steps=2), objective=StandInObjective(), resume="last")
    assert resumed.trainer.global_step == 2 and "max_steps: 2" in (run_dir / "config.yaml").read_text()


class NanAt(StandInObjective):
    def forward(self, model, batch, mems=None, generator=None):
        out = super().forward(model, batch, mems, generator)
        if batch.get("batch_index") == 3:
            out.loss = out.loss * float("nan")
        return out


def test_non_finite_loss_names_the_step(assets, tmp_path):
    from plmgen.errors import UserError

    with pytest.raises(UserError, match="at step 3.*lower train.lr or raise train.warmup_steps;"):
        run_training(config(assets, tmp_path, max_steps=6, val_every=10), objective=NanAt())


def test_bf16_mixed_runs_on_cpu(assets, tmp_path):
    result = run_training(config(assets, tmp_path, max_steps=2, precision="bf16"), objective=StandInObjective())
    assert result.trainer.global_step == 2


def test_optimizer_is_fused_adamw_and_the_module_clips_the_global_grad_norm():
    model = XLNet(ModelConfig.named("tiny"))
    module = PLMModule(model, StandInObjective(), TrainConfig(grad_clip=0.5))
    opt = make_optimizer([model], lr=1e-3, weight_decay=0.01)
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["fused"]
    for p in model.parameters():
        p.grad = torch.full_like(p, 3.0)
    module.on_before_optimizer_step(opt)
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert abs(norm.item() - 0.5) < 1e-4
    module.train_cfg = TrainConfig(grad_clip=0.0)  # 0 = off: gradients untouched
    model.word_embedding.weight.grad = torch.full_like(model.word_embedding.weight, 3.0)
    module.on_before_optimizer_step(opt)
    assert torch.equal(model.word_embedding.weight.grad, torch.full_like(model.word_embedding.weight, 3.0))


def test_no_weight_decay_on_biases_norms_and_attention_biases():
    model = XLNet(ModelConfig.named("tiny"))
    decay, no_decay = param_groups([model], 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    skipped = {names[id(p)] for p in no_decay["params"]}
    assert {"mask_emb", "r_w_bias", "r_r_bias", "r_s_bias", "lm_bias"} <= skipped
    assert all("layer_norm" in n or n.endswith("bias") or n in {"mask_emb", "r_w_bias", "r_r_bias", "r_s_bias", "lm_bias"}
               for n in skipped)
    decayed = {names[id(p)] for p in decay["params"]}
    assert "word_embedding.weight" in decayed and any(n.endswith("ff.layer_1.weight") for n in decayed)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0


def test_warmup_then_linear_decay():
    lrs = [warmup_linear(s, 4, 12, 0.1) for s in range(13)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert lrs[4] == 1.0 and abs(lrs[12] - 0.1) < 1e-9
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))


def test_training_flushes_subnormal_floats(assets, tmp_path):
    """Adam moments of rarely-seen rows decay into subnormals, which are ~50x slower on x86; training flushes them."""
    seen = []

    class Probe(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            seen.append(float(torch.tensor([1e-39]) * 1.0))

    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU cannot flush subnormals")
    torch.set_flush_denormal(False)
    try:
        assert float(torch.tensor([1e-39]) * 1.0) != 0.0  # kept by default
        run_training(config(assets, tmp_path, max_steps=2, val_every=2), objective=StandInObjective(),
                     callbacks=[Probe()])
        assert seen and all(v == 0.0 for v in seen)
    finally:
        torch.set_flush_denormal(False)
