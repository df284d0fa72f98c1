import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyiqa
import pytest
import torch
from PIL import Image

import bpclip_plugins  # noqa: F401  (registers BPCLIP with pyiqa)
from bpclip_core.cli import main as cli_main
from bpclip_core.errors import CheckpointError, ModeMismatchError
from bpclip_core.model.adjectives import DIMENSIONS
from bpclip_core.running.engine import QualityEngine, load_quality_model
from bpclip_core.running.explain import dimension_goodness
from bpclip_core.weights.checkpoint import load_checkpoint, read_metadata
from bpclip_plugins.pyiqa import BPCLIPArch
from bpclip_plugins.torchmetrics import BPCLIPScore

ROOT = Path(__file__).resolve().parents[2]


def _images(n, seed):
    generator = torch.Generator().manual_seed(seed)
    return torch.nn.functional.interpolate(torch.rand(n, 3, 8, 8, generator=generator), size=(64, 64), mode="bilinear")


def test_metrics_are_listed_with_their_metadata(tiny_checkpoints):
    names = pyiqa.list_models()
    assert {"bpclip", "bpclip_fr", "bpclip_zeroshot"} <= set(names)
    assert "bpclip_fr" in pyiqa.list_models(metric_mode="FR")
    metric = pyiqa.create_metric("bpclip", checkpoint=str(tiny_checkpoints["nr"]), device="cpu")
    assert (metric.metric_mode, metric.lower_better, metric.score_range) == ("NR", False, "0, 1")
    fr = pyiqa.create_metric("bpclip_fr", checkpoint=str(tiny_checkpoints["fr"]), device="cpu")
    assert fr.metric_mode == "FR"


def test_no_argument_scores_with_the_bundled_models():
    clean = _images(2, 3)
    noisy = (clean + 0.15 * torch.randn_like(clean)).clamp(0, 1)
    nr = pyiqa.create_metric("bpclip", device="cpu")
    fr = pyiqa.create_metric("bpclip_fr", device="cpu")
    for metric, args in ((nr, (clean,)), (fr, (clean, clean))):
        scores = metric(*args).flatten()
        assert scores.shape == (2,) and ((scores >= 0) & (scores <= 1)).all()
    assert (fr(noisy, clean).flatten() < fr(clean, clean).flatten()).all()


def test_scores_match_the_core_engine(tiny_checkpoints, tmp_path):
    nr_path, fr_path = tiny_checkpoints["nr"], tiny_checkpoints["fr"]
    engine_nr = QualityEngine(load_quality_model(nr_path), attention="eager")
    engine_fr = QualityEngine(load_quality_model(fr_path), attention="eager")
    x, y = _images(2, 0), _images(2, 1)
    nr = pyiqa.create_metric("bpclip", checkpoint=str(nr_path), device="cpu")
    fr = pyiqa.create_metric("bpclip_fr", checkpoint=str(fr_path), device="cpu")
    assert torch.allclose(nr(x).squeeze(1), engine_nr.predict(x).score, atol=1e-5)
    assert torch.allclose(fr(x, y).squeeze(1), engine_fr.predict(x, y).score, atol=1e-5)
    files = []
    for i, image in enumerate((x * 255).round().byte()):
        files.append(tmp_path / f"{i}.png")
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(files[-1])
    from_file = nr(str(files[0]))
    assert from_file.item() == pytest.approx(engine_nr.score(files[0])[0].score, abs=1e-5)
    pair = fr(str(files[0]), str(files[1]))
    assert pair.item() == pytest.approx(engine_fr.score(files[0], files[1])[0].score, abs=1e-5)


def test_as_loss_gives_gradients(tiny_checkpoints):
    loss = pyiqa.create_metric("bpclip", checkpoint=str(tiny_checkpoints["nr"]), as_loss=True, device="cpu")
    x = _images(2, 3).requires_grad_()
    value = loss(x)
    assert value.ndim == 0
    value.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_zero_shot_entry(planted_clip_rn50):
    metric = pyiqa.create_metric("bpclip_zeroshot", device="cpu")
    score = metric(_images(1, 4))
    assert 0 <= score.item() <= 1


def test_entry_point_is_declared():
    points = importlib.metadata.entry_points(group="pyiqa.archs")
    (point,) = [p for p in points if p.name == "bpclip"]
    assert point.value == "bpclip_plugins.pyiqa_registration:register"
    assert callable(point.load())


def _fresh_python(code, **env):
    """Run ``code`` in a new interpreter whose own code never imports bpclip_plugins."""
    environment = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=environment)


def test_a_fresh_process_knows_bpclip_without_importing_bpclip_plugins(tiny_checkpoints, tmp_path):
    image = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(image)
    code = (
        "import sys, pyiqa\n"
        "print(sorted(n for n in pyiqa.list_models() if n.startswith('bpclip')))\n"
        "print('bpclip_fr' in pyiqa.list_models(metric_mode='FR'))\n"
        f"metric = pyiqa.create_metric('bpclip', checkpoint={str(tiny_checkpoints['nr'])!r}, device='cpu')\n"
        f"print(metric({str(image)!r}).item())\n"
    )
    run = _fresh_python(code)
    assert run.returncode == 0, run.stderr[-3000:]
    names, fr, score = run.stdout.strip().splitlines()[-3:]
    assert names == "['bpclip', 'bpclip_fr', 'bpclip_nr', 'bpclip_zeroshot']" and fr == "True"
    engine = QualityEngine(load_quality_model(tiny_checkpoints["nr"]), attention="eager")
    assert float(score) == pytest.approx(engine.score(image)[0].score, abs=1e-5)
    off = _fresh_python("import pyiqa; print('bpclip' in pyiqa.list_models())", BPCLIP_PYIQA_AUTOREGISTER="0")
    assert off.returncode == 0 and off.stdout.strip().splitlines()[-1] == "False"  # the documented opt-out


def test_pyiqa_command_scores_with_bpclip(tmp_path):
    image = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(image)
    command = Path(sys.executable).with_name("pyiqa")
    run = subprocess.run(
        [str(command), "bpclip", "-t", str(image), "--device", "cpu"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "'bpclip'" in run.stdout and "'mean'" in run.stdout


def _engine_and_metric(path, mode):
    engine = QualityEngine(load_quality_model(path), attention="eager")
    metric = pyiqa.create_metric("bpclip" if mode == "nr" else "bpclip_fr", checkpoint=str(path), device="cpu")
    return engine, metric


def test_files_are_decoded_as_in_the_engine(tiny_checkpoints, tmp_path):
    """16-bit PNGs and EXIF orientation: pyiqa's own loader differs; ours is used (issue 15.9)."""
    rng = np.random.default_rng(2)
    deep = tmp_path / "deep.png"
    Image.fromarray((rng.random((70, 90)) * 20000).astype(np.uint16)).save(deep)  # mostly below 1/3 of white
    rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    Image.fromarray(rng.integers(0, 256, (64, 112, 3), dtype=np.uint8)).save(rotated, exif=exif, quality=95)
    engine, metric = _engine_and_metric(tiny_checkpoints["nr"], "nr")
    for path in (deep, rotated):
        assert metric(str(path)).item() == pytest.approx(engine.score(path)[0].score, abs=1e-5), path.name
    engine_fr, fr = _engine_and_metric(tiny_checkpoints["fr"], "fr")
    plain = tmp_path / "plain.png"
    Image.fromarray(rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)).save(plain)
    assert fr(str(deep), str(plain)).item() == pytest.approx(engine_fr.score(deep, plain)[0].score, abs=1e-5)
    other = pyiqa.create_metric("psnr", device="cpu")  # other metrics keep pyiqa's own loader
    assert other(str(plain), str(plain)).item() > 40


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("import bpclip_plugins, pyiqa; print('bpclip' in pyiqa.list_models())", "True"),
        ("import pyiqa, bpclip_plugins; print('bpclip' in pyiqa.list_models())", "True"),
        ("import sys; sys.modules['pyiqa'] = None; import bpclip_plugins; print('ok')", "ok"),
    ],
)
def test_import_order_and_pyiqa_missing(code, expected):
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == expected


def test_pyiqa_trainer_runs_the_example_config(tiny_checkpoints, tmp_path):
    rng = np.random.default_rng(0)
    images = tmp_path / "data" / "images"
    images.mkdir(parents=True)
    rows = ["image,mos,split"]
    for i in range(12):
        name = f"img{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, (72, 72, 3), dtype=np.uint8)).save(images / name)
        rows.append(f"{name},{rng.uniform(1, 5):.3f},{'train' if i < 8 else 'val'}")
    (tmp_path / "data" / "meta.csv").write_text("\n".join(rows) + "\n")
    config = (ROOT / "examples" / "pyiqa" / "train_bpclip_nr.yml").read_text()
    config = config.replace("total_iter: 200", "total_iter: 4").replace("val_freq: 50", "val_freq: 2")
    (tmp_path / "train.yml").write_text(config)
    env = dict(os.environ, BPCLIP_DATA=str(tmp_path / "data"), BPCLIP_INIT=str(tiny_checkpoints["nr"]))
    script = ROOT / "examples" / "pyiqa" / "train_with_pyiqa.py"
    run = subprocess.run(
        [sys.executable, str(script), "-opt", str(tmp_path / "train.yml")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    saved = list((tmp_path / "experiments").rglob("net_*.pth"))
    assert saved, run.stdout[-2000:]
    state = torch.load(saved[0], map_location="cpu", weights_only=True)["params"]
    assert any(k.startswith("model.backbone") for k in state)
    # the documented round trip: pyiqa's output becomes a checkpoint the command scores with
    converted = tmp_path / "from-pyiqa.safetensors"
    assert (
        cli_main(["pyiqa", "convert", str(saved[0]), "--init", str(tiny_checkpoints["nr"]), "--out", str(converted)])
        == 0
    )
    assert cli_main(["score", "--no-progress", str(images / "img00.png"), "--checkpoint", str(converted)]) == 0


def test_convert_pyiqa_trainer_output_into_a_checkpoint(tiny_checkpoints, tmp_path, capsys):
    """pyiqa's net_*.pth (as its trainer saves BPCLIPArch) -> a .safetensors checkpoint with its card."""
    arch = BPCLIPArch(checkpoint=str(tiny_checkpoints["nr"]))
    with torch.no_grad():
        for parameter in arch.model.regressor.parameters():
            parameter.add_(0.05)  # "trained": differs from the initial checkpoint
    net = tmp_path / "experiments" / "run" / "models" / "net_4.pth"
    net.parent.mkdir(parents=True)
    torch.save({"params": arch.state_dict()}, net)
    out = tmp_path / "from-pyiqa.safetensors"
    argv = ["pyiqa", "convert", str(net), "--init", str(tiny_checkpoints["nr"]), "--out", str(out)]
    assert cli_main([*argv, "--mos-range", "1", "5"]) == 0
    assert "bpclip score IMAGES --checkpoint" in capsys.readouterr().out
    card = read_metadata(out)
    assert card["provenance"]["trained"] is True and "pyiqa" in card["provenance"]["trainer"]
    assert card["provenance"]["source"] == "net_4.pth" and card["score_scale"]["mos_max"] == 5.0
    model = load_checkpoint(out)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, arch.model.state_dict()[name]), name
    images = _images(2, 6)
    expected = arch.engine.predict(images).score
    assert torch.allclose(BPCLIPScore(checkpoint=out, reduction="none")(images), expected, atol=1e-5)
    pickled = tmp_path / "net_5.pth"
    torch.save({"params": arch.state_dict(), "extra": BPCLIPScore}, pickled)  # not plain tensors
    with pytest.raises(CheckpointError, match="weights_only"):
        from bpclip_plugins.pyiqa import convert_pyiqa_checkpoint

        convert_pyiqa_checkpoint(pickled, tiny_checkpoints["nr"], tmp_path / "x.safetensors")
    fr_init = ["pyiqa", "convert", str(net), "--init", str(tiny_checkpoints["fr"]), "--out", str(tmp_path / "y.st")]
    assert cli_main(fr_init) == 2  # the tensors do not fit an FR config: a clear error
    assert "do not fit" in capsys.readouterr().err


def test_pyiqa_returns_the_dimensions_when_asked(tiny_checkpoints):
    path = tiny_checkpoints["nr"]
    images = _images(2, 4)
    metric = pyiqa.create_metric("bpclip", checkpoint=str(path), device="cpu", return_dimensions=True)
    out = metric(images)
    assert list(out) == ["score", *DIMENSIONS] and all(v.shape == (2, 1) for v in out.values())
    plain = pyiqa.create_metric("bpclip", checkpoint=str(path), device="cpu")
    assert torch.allclose(out["score"], plain(images), atol=1e-5)
    model = load_checkpoint(path)
    with torch.inference_mode():
        expected = dimension_goodness(model(images).adjective_probabilities, model.card.adjectives)
    assert all(torch.allclose(out[d].squeeze(1), expected[d], atol=1e-4) for d in DIMENSIONS)


def test_bpclip_nr_is_bpclip_beside_bpclip_fr(tiny_checkpoints):
    assert "bpclip_nr" in pyiqa.list_models(metric_mode="NR")
    images = _images(2, 6)
    nr = pyiqa.create_metric("bpclip_nr", checkpoint=str(tiny_checkpoints["nr"]), device="cpu")
    plain = pyiqa.create_metric("bpclip", checkpoint=str(tiny_checkpoints["nr"]), device="cpu")
    assert (nr.metric_mode, nr.lower_better) == ("NR", False)
    assert torch.allclose(nr(images), plain(images), atol=1e-6)
    with pytest.raises(ModeMismatchError):  # an FR checkpoint is refused, as by "bpclip"
        pyiqa.create_metric("bpclip_nr", checkpoint=str(tiny_checkpoints["fr"]), device="cpu")


def test_an_unknown_mode_names_the_valid_modes():
    with pytest.raises(ValueError, match=r"mode must be one of 'nr', 'fr' .*got 'xx'"):
        pyiqa.create_metric("bpclip", mode="xx", device="cpu")
