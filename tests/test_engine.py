import numpy as np
import pytest
import torch
from PIL import Image

from bpclip_core import InputError
from bpclip_core.inputs.decoding import load_image
from bpclip_core.running.engine import QualityEngine, autocast_dtype, compile_attention, pick_device
from bpclip_core.weights.checkpoint import save_checkpoint


def _png(path, array):
    Image.fromarray(array).save(path)
    return path


@pytest.fixture
def photo_dir(tmp_path, write_random_images):
    return write_random_images(tmp_path / "photos", [f"img{i}.png" for i in range(5)], 64, 80)


def test_every_input_kind_gives_the_models_own_score(nr_model, photo_dir):
    engine = QualityEngine(nr_model, attention="eager", num_workers=0)
    path = photo_dir / "img0.png"
    tensor = load_image(path)
    with torch.inference_mode():
        expected = float(nr_model(tensor[None]).score)
    array = np.asarray(Image.open(path))
    sources = [path, str(path), Image.open(path), array, tensor, tensor[None], (tensor * 255).round() / 255]
    results = engine.score(sources)
    assert [r.error for r in results] == [None] * 7
    assert all(r.score == pytest.approx(expected, abs=1e-5) for r in results)
    assert results[3].path == "<ndarray #3>"


def test_workers_and_batching_do_not_change_scores(nr_model, photo_dir):
    one_by_one = QualityEngine(nr_model, attention="eager", batch_size=1, num_workers=0).score(photo_dir)
    batched = QualityEngine(nr_model, attention="script", batch_size=4, num_workers=1).score(photo_dir)
    assert [r.path for r in one_by_one] == [r.path for r in batched]
    for a, b in zip(one_by_one, batched):
        assert a.score == pytest.approx(b.score, abs=1e-5)


@pytest.mark.parametrize("backend", ["script", "compile"])
def test_attention_backends_match_eager(model_factory, images, backend):
    eager = model_factory("fr")
    compiled = compile_attention(model_factory("fr"), backend)
    assert type(compiled.information_branch) is not type(eager.information_branch)
    with torch.inference_mode():
        a, b = eager(images, images.flip(-1)), compiled(images, images.flip(-1))
    assert torch.allclose(a.score, b.score, atol=1e-5)
    assert torch.allclose(a.level_probabilities, b.level_probabilities, atol=1e-5)


def test_scripted_model_still_saves_and_loads(tmp_path, nr_model, images):
    from bpclip_core.weights.checkpoint import load_checkpoint

    expected = nr_model(images).score
    compile_attention(nr_model, "script")
    loaded = load_checkpoint(save_checkpoint(nr_model, tmp_path / "m.safetensors"))
    assert torch.allclose(loaded(images).score, expected, atol=1e-6)


def test_bad_inputs_are_reported_one_by_one(nr_model, photo_dir, tmp_path):
    (photo_dir / "zero.jpg").write_bytes(b"")
    (photo_dir / "notes.png").write_text("hello")
    data = (photo_dir / "img1.png").read_bytes()
    (photo_dir / "truncated.png").write_bytes(data[:200])
    _png(photo_dir / "small.png", np.zeros((20, 60, 3), np.uint8))
    _png(photo_dir / "one.png", np.zeros((1, 1, 3), np.uint8))
    link = photo_dir.parent / "link.jpg"
    link.symlink_to(tmp_path / "missing.jpg")  # a dangling link: an unreadable path
    extra = [link, torch.full((3, 40, 40), float("nan")), torch.rand(3, 40, 40) * 2, {"not": "an image"}]
    results = QualityEngine(nr_model, num_workers=1, batch_size=3).score([photo_dir, *extra])
    by_name = {r.path.rsplit("/", 1)[-1]: r for r in results}
    errors = {name: r.error for name, r in by_name.items() if r.error}
    assert set(errors) == {
        "zero.jpg", "notes.png", "truncated.png", "small.png", "one.png", "link.jpg",
        "<Tensor #11>", "<Tensor #12>", "<dict #13>",
    }  # fmt: skip
    assert "at least 32 px" in errors["small.png"] and "NaN" in errors["<Tensor #11>"]
    assert "values must lie in" in errors["<Tensor #12>"] and "cannot score an object" in errors["<dict #13>"]
    assert all(by_name[f"img{i}.png"].score is not None for i in range(5))


def test_full_reference_pairs(fr_model, photo_dir, tmp_path):
    refs = tmp_path / "refs"
    refs.mkdir()
    for i in range(4):
        (refs / f"img{i}.png").write_bytes((photo_dir / f"img{i}.png").read_bytes())
    _png(refs / "img3.png", np.zeros((50, 50, 3), np.uint8))  # wrong size for its partner
    engine = QualityEngine(fr_model, num_workers=0)
    results = engine.score(photo_dir, refs)
    assert [r.error is None for r in results] == [True, True, True, False, False]
    assert "same size" in results[3].error and "no reference" in results[4].error
    same = engine.score(photo_dir / "img0.png", photo_dir / "img0.png")[0]
    assert same.score is not None
    with pytest.raises(InputError, match="5 images but 2 references"):
        engine.score(photo_dir, [refs / "img0.png", refs / "img1.png"])
    with pytest.raises(InputError, match="pass reference images"):
        engine.score(photo_dir)


def test_predict_batches_and_crops(nr_model, images):
    engine = QualityEngine(nr_model, batch_size=1, protocol="resize")
    assert torch.allclose(engine.predict(images).score, nr_model(images).score, atol=1e-5)
    crops = QualityEngine(nr_model, protocol="crops")
    crops.protocol = crops.protocol.__class__("crops", size=32, num_crops=5)
    views, _, _ = crops.protocol.batch_views(images)
    expected = nr_model(views).score.view(2, 5).mean(1)
    assert torch.allclose(crops.predict(images).score, expected, atol=1e-5)
    with pytest.raises(InputError, match="no-reference model"):
        engine.predict(images, images)


def test_a_huge_photo_is_decoded_small(nr_model, tmp_path):
    path = tmp_path / "huge.jpg"
    Image.new("RGB", (6000, 4000), (120, 80, 40)).save(path, quality=80)
    small = load_image(path, min_short_side=384)
    assert 384 <= min(small.shape[-2:]) < 1000
    result = QualityEngine(nr_model, num_workers=0).score(path)[0]
    assert result.error is None


@pytest.mark.parametrize(("native", "expected"), [(True, torch.bfloat16), (False, torch.float16)])
def test_auto_precision_on_cuda_is_native_bf16_else_fp16(monkeypatch, native, expected):
    """A T4 or V100 answers is_bf16_supported() with True by emulation, which is slow: only
    native bf16 counts, else fp16 (safe for the bundled models, see test_feature_scale.py)."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: native or including_emulation)
    assert autocast_dtype(torch.device("cuda"), "auto") is expected


def test_device_precision_and_progress(nr_model, photo_dir):
    assert pick_device("auto").type in {"cuda", "mps", "cpu"}
    assert autocast_dtype(torch.device("cpu"), "auto") is None
    assert autocast_dtype(torch.device("cpu"), "bf16") is torch.bfloat16
    with pytest.raises(ValueError, match="precision"):
        autocast_dtype(torch.device("cpu"), "int8")
    seen = []
    engine = QualityEngine(nr_model, device="cpu", precision="bf16", num_workers=0, batch_size=2)
    results = engine.score(photo_dir, progress=seen.append)
    assert sum(seen) == 5 and all(r.score is not None for r in results)
    with pytest.raises(ValueError, match="at least 1"):
        QualityEngine(nr_model, batch_size=0)
    with pytest.raises(InputError, match="no images"):
        engine.score([])


def test_folded_inference_follows_weight_updates(model_factory, images):
    model = model_factory("nr")
    engine = QualityEngine(model, attention="eager", device="cpu")
    unfolded = QualityEngine(model, attention="eager", device="cpu", fold_batchnorm=False, channels_last=False)
    folded_model = engine.inference_model()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded_model.backbone.modules())
    assert folded_model.fusion is model.fusion  # the heads are shared, not copied
    before = engine.predict(images).score
    assert torch.allclose(before, unfolded.predict(images).score, atol=1e-5)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.5)
    engine.predict(images, differentiable=True).score.sum().backward()  # differentiable: the model itself
    assert model.backbone.stages[0][0].conv1.weight.grad is not None
    optimiser.step()  # the folded copy is stale now and must be rebuilt
    after = engine.predict(images).score
    assert engine.inference_model() is not folded_model and not torch.allclose(after, before, atol=1e-4)
    with torch.inference_mode():
        assert torch.allclose(after, model(images.contiguous()).score, atol=1e-5)


def test_a_bf16_run_then_an_fp32_run_of_one_model(nr_model, images):
    """The composed-weight cache of NR pooling must not keep autocast's dtype (issue 13.5)."""
    with torch.inference_mode():
        expected = nr_model.eval()(images).score
    low = QualityEngine(nr_model, device="cpu", precision="bf16", attention="eager").predict(images)
    full = QualityEngine(nr_model, device="cpu", precision="fp32", attention="eager").predict(images)
    assert torch.allclose(full.score, expected, atol=1e-6)
    assert torch.allclose(low.score, full.score, atol=0.02)


def test_similarities_softmax_and_regressor_run_in_fp32_under_autocast(nr_model, images):
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = nr_model.eval()(images)
    assert out.score.dtype == torch.float32 and out.level_probabilities.dtype == torch.float32
    # bf16 probabilities carry 8 bits: sums off by up to ~4e-3; fp32 ones sum to 1 within 1e-6
    assert torch.allclose(out.level_probabilities.sum(-1), torch.ones(2, 4), atol=1e-6)


def test_bundled_model_in_bf16_agrees_with_fp32():
    """Measured on examples/images: scores within 0.007, probabilities within 0.035 (bf16 backbone)."""
    from pathlib import Path

    from bpclip_core.weights.checkpoint import bundled_checkpoint, load_checkpoint

    model = load_checkpoint(bundled_checkpoint("nr"))
    files = sorted(Path(__file__).parents[1].joinpath("examples", "images").glob("*.jpg"))
    low = QualityEngine(model, device="cpu", precision="bf16", num_workers=0).score(files)
    full = QualityEngine(model, device="cpu", precision="fp32", num_workers=0).score(files)
    assert max(abs(a.score - b.score) for a, b in zip(low, full)) <= 0.02
    assert len({round(r.score, 6) for r in low}) == len(files)  # no collapse onto a coarse bf16 grid


def test_a_subset_scores_like_the_whole_run(nr_model, photo_dir):
    engine = QualityEngine(nr_model, device="cpu", num_workers=0)
    whole = engine.score(photo_dir)
    chunks = list(engine.iter_scores(photo_dir, subset=[2, 0]))
    assert {total for total, _ in chunks} == {2}
    picked = dict(item for _, chunk in chunks for item in chunk)
    assert sorted(picked) == [0, 2]
    for index in (0, 2):
        assert picked[index].path == whole[index].path and picked[index].score == pytest.approx(whole[index].score)
    with pytest.raises(ValueError, match="outside the"):
        list(engine.iter_scores(photo_dir, subset=[99]))


def test_the_engine_checks_values_once(nr_model, photo_dir, images, monkeypatch):
    """The model's own value checks (three host syncs per batch on a GPU) are skipped for views
    the engine checked already; the model called alone still checks."""
    import bpclip_core.model.bpclip as model_module

    calls = []
    real = model_module.check_images
    monkeypatch.setattr(model_module, "check_images", lambda *args, **kw: calls.append(1) or real(*args, **kw))
    for pipeline in ("cpu", "device"):
        engine = QualityEngine(nr_model, attention="eager", num_workers=0, pipeline=pipeline)
        assert all(r.error is None for r in engine.score(photo_dir)) and engine.predict(images).score.shape == (2,)
    assert calls == []
    with torch.inference_mode():
        nr_model(images)
    assert calls == [1]
