import csv
import json
import math

import pytest
import torch

from bpclip_core import preset
from bpclip_core.cli import main
from bpclip_core.training import TrainConfig, TrainingError, train
from bpclip_core.training.trainer import RESUME_NAME, read_resume_state
from bpclip_core.weights.checkpoint import load_checkpoint, read_metadata


def tiny_config(csv_path, out, **changes) -> TrainConfig:
    base = {
        "dataset": "csv",
        "dataset_root": str(csv_path),
        "model": "tiny",
        "pretrained": False,
        "epochs": 2,
        "batch_size": 8,
        "patch_size": 48,
        "lr": 1e-3,
        "cache_images": True,
        "progress": False,
        "max_steps_per_epoch": 2,
        "out_dir": str(out),
    }
    return TrainConfig(**{**base, **changes})


def _tiny_one_step_args(out) -> list[str]:
    """Command-line flags for a tiny random model trained for one step of one epoch."""
    return [
        "--model", "tiny", "--random-init", "--epochs", "1", "--batch-size", "8", "--patch-size", "48",
        "--out", str(out), "--no-progress", "--cache-images", "--set", "max_steps_per_epoch=1",
    ]  # fmt: skip


def _final_weights(out):
    return read_resume_state(out / RESUME_NAME)["model"]


def test_resumed_run_matches_the_uninterrupted_run(small_synthetic_csv, tmp_path):
    straight = train(tiny_config(small_synthetic_csv, tmp_path / "straight"))
    train(tiny_config(small_synthetic_csv, tmp_path / "split", epochs=1))
    resumed = train(tiny_config(small_synthetic_csv, tmp_path / "split", epochs=2), resume=True)
    a, b = _final_weights(tmp_path / "straight"), _final_weights(tmp_path / "split")
    assert a.keys() == b.keys()
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    assert worst <= 1e-6
    assert [r["train_loss"] for r in straight.history] == pytest.approx([r["train_loss"] for r in resumed.history])
    # and training did change the weights
    initial = torch.load(tmp_path / "split" / RESUME_NAME, weights_only=True)["model"]
    assert set(initial) == set(a)


def test_run_folder_holds_a_trained_checkpoint_log_and_report(small_synthetic_csv, tmp_path):
    out = tmp_path / "run"
    result = train(tiny_config(small_synthetic_csv, out))
    meta = read_metadata(result.best_checkpoint)
    assert meta["provenance"]["trained"] is True
    assert meta["provenance"]["dataset"] == "synthetic"
    assert meta["score_scale"] == {"mos_min": 1.0, "mos_max": pytest.approx(4.2), "higher_is_better": True}
    model = load_checkpoint(result.best_checkpoint, mode="fr")
    assert model.card.provenance["epochs"] in (1, 2)
    with (out / "log.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == [1, 2] and all(float(r["train_loss"]) > 0 for r in rows)
    report = json.loads((out / "report" / "metrics.json").read_text())
    assert set(report["metrics"]) >= {"srcc", "plcc", "plcc_raw", "krcc", "rmse"}
    for name in ("summary.md", "scatter.png", "curves.png"):
        assert (out / "report" / name).stat().st_size > 0
    assert result.test_metrics["count"] == len(report["mos"])


def test_resume_with_a_different_config_is_a_clear_error(small_synthetic_csv, tmp_path):
    out = tmp_path / "run"
    train(tiny_config(small_synthetic_csv, out, epochs=1))
    before = (out / RESUME_NAME).read_bytes()
    with pytest.raises(TrainingError, match="different config.*lr"):
        train(tiny_config(small_synthetic_csv, out, epochs=2, lr=5e-4), resume=True)
    assert (out / RESUME_NAME).read_bytes() == before  # nothing lost


def test_a_new_run_never_overwrites_an_existing_one(small_synthetic_csv, tmp_path):
    out = tmp_path / "run"
    train(tiny_config(small_synthetic_csv, out, epochs=1))
    best = (out / "best.safetensors").read_bytes()
    with pytest.raises(TrainingError, match="already holds a run"):
        train(tiny_config(small_synthetic_csv, out, epochs=1))
    assert (out / "best.safetensors").read_bytes() == best


def test_corrupt_resume_checkpoint_is_a_clear_error(small_synthetic_csv, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / RESUME_NAME).write_bytes(b"not a checkpoint")
    with pytest.raises(TrainingError, match="not a readable resume checkpoint"):
        train(tiny_config(small_synthetic_csv, out), resume=True)


def test_config_file_flags_and_set_overrides(tmp_path):
    from bpclip_core.training.cli import config_from_args

    path = tmp_path / "c.yaml"
    path.write_text("dataset: kadid10k\ndataset_root: /data/kadid\nepochs: 7\nlr: 0.002\n")
    config = TrainConfig.from_file(path)
    assert (config.epochs, config.lr, config.weight_decay, config.t_max) == (7, 0.002, 1e-5, 50)
    assert TrainConfig().learning_rate("fr") == 1e-4 and TrainConfig().learning_rate("nr") == 3e-5
    path.write_text("epochz: 3\n")
    with pytest.raises(ValueError, match="unknown training config fields"):
        TrainConfig.from_file(path)
    import argparse

    parser = argparse.ArgumentParser()
    from bpclip_core.training.cli import _add_config_flags

    _add_config_flags(parser)
    (tmp_path / "c.json").write_text(json.dumps({"epochs": 9, "batch_size": 4}))
    args = parser.parse_args(["--config", str(tmp_path / "c.json"), "--epochs", "3", "--set", "t_max=10"])
    config = config_from_args(args)
    assert (config.epochs, config.batch_size, config.t_max) == (3, 4, 10)
    assert not config.train_batchnorm and config_from_args(parser.parse_args(["--train-batchnorm"])).train_batchnorm
    flags = ["--init-backbone", "fr.safetensors", "--recalibrate-batchnorm"]
    recalibrating = config_from_args(parser.parse_args(flags))
    assert recalibrating.recalibrate_batchnorm and not config.recalibrate_batchnorm


def test_cli_synthesize_train_evaluate(pristine_dir, tmp_path, capsys):
    data = tmp_path / "data"
    assert (
        main(
            [
                "synthesize",
                str(pristine_dir),
                "--out",
                str(data),
                "--distortions",
                "gaussian_blur,jpeg",
                "--levels",
                "1,3,5",
                "--size",
                "48",
            ]
        )
        == 0
    )
    csv_path = data / "synthetic.csv"
    assert len(csv_path.read_text().splitlines()) == 1 + 8 * 2 * 3
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--dataset",
            "csv",
            "--data",
            str(csv_path),
            *_tiny_one_step_args(out),
        ]
    )
    assert code == 0
    capsys.readouterr()
    report = tmp_path / "eval"
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(out / "best.safetensors"),
                "--dataset",
                "csv",
                "--data",
                str(csv_path),
                "--protocol",
                "crops",
                "--num-crops",
                "2",
                "--size",
                "48",
                "--report",
                str(report),
            ]
        )
        == 0
    )
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["count"] == 48
    assert (report / "scatter.png").is_file() and (report / "summary.md").is_file()


def test_cli_usage_errors_exit_2(tmp_path, capsys):
    assert main(["train", "--model", "tiny"]) == 2
    assert "no dataset given" in capsys.readouterr().err
    assert main(["synthesize", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    assert main(["evaluate", "--checkpoint", "x", "--dataset", "nope", "--data", "x", "--report", "r"]) == 2


def test_cli_splits_runs_each_split_and_reports_mean_and_std(small_synthetic_csv, tmp_path, capsys):
    out = tmp_path / "splits"
    code = main(
        [
            "splits",
            "--dataset",
            "csv",
            "--data",
            str(small_synthetic_csv),
            "--num-splits",
            "2",
            *_tiny_one_step_args(out),
        ]
    )
    assert code == 0
    report = json.loads((out / "report" / "metrics.json").read_text())
    assert len(report["per_split"]) == 2 and set(report["metrics"]["srcc"]) == {"mean", "std"}
    assert "+-" in capsys.readouterr().out
    assert json.loads((out / "splits.json").read_text())["num_items"] == 80


def test_every_example_config_loads():
    from pathlib import Path

    configs = sorted((Path(__file__).parents[2] / "examples" / "configs").glob("*.yaml"))
    assert len(configs) >= 10
    ablations = set()
    for path in configs:
        config = TrainConfig.from_file(path)
        assert config.dataset and config.dataset_root, path
        model = preset(config.model, config.mode or "nr", **config.model_overrides)  # the overrides are valid
        if path.name.startswith("ablation_"):
            ablations.add((model.weight_branch, model.attention_direction, model.clip_text))
    assert len(ablations) == 4  # the four rows of Table V


@pytest.mark.slow
def test_a_run_killed_with_sigkill_resumes_to_the_uninterrupted_result(small_synthetic_csv, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    def command(out, *extra):
        return [
            sys.executable, "-m", "bpclip_core.cli", "train", "--dataset", "csv", "--data", str(small_synthetic_csv),
            "--model", "tiny", "--random-init", "--epochs", "6", "--batch-size", "8", "--patch-size", "48",
            "--lr", "1e-3", "--cache-images", "--no-progress", "--set", "max_steps_per_epoch=4", "--out", str(out),
            *extra,
        ]  # fmt: skip

    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(command(straight), check=True, capture_output=True, timeout=300)
    process = subprocess.Popen(command(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not (killed / RESUME_NAME).exists():  # the first epoch's checkpoint: five epochs still to go
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL
    assert read_resume_state(killed / RESUME_NAME)["epoch"] < 6
    subprocess.run(command(killed, "--resume"), check=True, capture_output=True, timeout=300)
    a, b = _final_weights(straight), _final_weights(killed)
    assert max(float((a[k].float() - b[k].float()).abs().max()) for k in a) <= 1e-6
    with (killed / "log.csv").open() as handle:
        epochs = [int(row["epoch"]) for row in csv.DictReader(handle)]
    assert epochs == [1, 2, 3, 4, 5, 6]  # each epoch logged once, the interrupted one redone


def test_partial_files_of_a_killed_run_are_removed_on_resume(small_synthetic_csv, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "run"
    train(tiny_config(small_synthetic_csv, out, epochs=1))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs
    stale = out / f".{RESUME_NAME}.{dead.pid}.partial"
    stale.write_bytes(b"half a checkpoint")
    (out / ".log.csv.partial").write_text("epoch\n")
    live = out / f".{RESUME_NAME}.1.partial"  # pid 1 runs: another writer's file is left alone
    live.write_bytes(b"")
    train(tiny_config(small_synthetic_csv, out, epochs=2), resume=True)
    assert not stale.exists() and not (out / ".log.csv.partial").exists() and live.exists()


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_and_channels_last_train_and_resume_on_cpu(small_synthetic_csv, tmp_path, precision):
    """The GPU recipe (autocast, fp16's loss scaling, channels_last) runs on the CPU too."""
    options = {"precision": precision, "channels_last": True, "epochs": 2}
    straight = train(tiny_config(small_synthetic_csv, tmp_path / "straight", **options))
    assert all(math.isfinite(row["train_loss"]) for row in straight.history)
    state = read_resume_state(tmp_path / "straight" / RESUME_NAME)
    assert ("scaler" in state) == (precision == "fp16")  # fp16's loss scale is resumed with the run
    weights = load_checkpoint(straight.best_checkpoint).state_dict()
    assert all(t.dtype == torch.float32 for t in weights.values() if t.is_floating_point())  # fp32 master weights
    train(tiny_config(small_synthetic_csv, tmp_path / "split", **{**options, "epochs": 1}))
    train(tiny_config(small_synthetic_csv, tmp_path / "split", **options), resume=True)
    a, b = _final_weights(tmp_path / "straight"), _final_weights(tmp_path / "split")
    assert max(float((a[k].float() - b[k].float()).abs().max()) for k in a) <= 1e-6


def test_precision_auto_is_fp32_on_the_cpu():
    from bpclip_core.training.trainer import StepNumerics

    numerics = StepNumerics.for_device(torch.device("cpu"), "auto", None)
    assert numerics.autocast_dtype is None and numerics.scaler is None and not numerics.channels_last
    assert TrainConfig().loader_workers(torch.device("cpu")) == 0
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainConfig(precision="fp8")


@pytest.mark.parametrize("mode", ["nr", "fr"])
def test_train_batchnorm_learns_its_affine_and_statistics_and_resumes(small_synthetic_csv, tmp_path, mode):
    frozen = train(tiny_config(small_synthetic_csv, tmp_path / "frozen", mode=mode))
    trained = train(tiny_config(small_synthetic_csv, tmp_path / "trained", mode=mode, train_batchnorm=True))
    for result, learns in ((frozen, False), (trained, True)):
        weights = _final_weights(result.out_dir)
        gammas = [v for k, v in weights.items() if k.startswith("backbone.") and k.endswith("bn1.weight")]
        assert gammas and any(not torch.equal(g, torch.ones_like(g)) for g in gammas) == learns
    frozen_means = _final_weights(frozen.out_dir)["backbone.stages.0.0.bn1.running_mean"]
    assert not torch.equal(frozen_means, _final_weights(trained.out_dir)["backbone.stages.0.0.bn1.running_mean"])
    train(tiny_config(small_synthetic_csv, tmp_path / "split", mode=mode, train_batchnorm=True, epochs=1))
    train(tiny_config(small_synthetic_csv, tmp_path / "split", mode=mode, train_batchnorm=True), resume=True)
    a, b = _final_weights(trained.out_dir), _final_weights(tmp_path / "split")
    assert max(float((a[k].float() - b[k].float()).abs().max()) for k in a) <= 1e-6
    model = load_checkpoint(trained.best_checkpoint, mode=mode)
    norms = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    model.train()
    assert not any(m.training for m in norms)  # loaded: frozen again


def test_recalibrate_batchnorm_measures_the_donor_backbone_anew(small_synthetic_csv, tmp_path):
    donor = train(tiny_config(small_synthetic_csv, tmp_path / "donor", mode="fr", epochs=1))
    key = "backbone.stages.0.0.bn1.running_mean"
    donor_means = _final_weights(donor.out_dir)[key]
    donor_path = str(donor.best_checkpoint)
    kept = train(tiny_config(small_synthetic_csv, tmp_path / "kept", mode="nr", init_backbone=donor_path))
    assert torch.equal(_final_weights(kept.out_dir)[key], donor_means)  # frozen: the donor's statistics
    changes = {"mode": "nr", "init_backbone": donor_path, "recalibrate_batchnorm": True}
    recalibrated = train(tiny_config(small_synthetic_csv, tmp_path / "recalibrated", **changes))
    means = _final_weights(recalibrated.out_dir)[key]
    assert torch.isfinite(means).all() and not torch.equal(means, donor_means)
    with pytest.raises(ValueError, match="recalibrate_batchnorm needs init_backbone"):
        TrainConfig(recalibrate_batchnorm=True)
