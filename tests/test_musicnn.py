"""The pretrained musicnn tagger (issue 10): the port computes what the authors' TensorFlow graph
computed, its front end is librosa's, the shipped weights are checked, and the probe on top learns."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import red_and_blue_noise
from thesis_lib import musicnn
from thesis_lib.config import THESIS
from thesis_lib.musicnn import MusicnnProbe, TaggerSpectrogram, load_musicnn
from thesis_lib.pretrained import PretrainedError

REFERENCE = Path(__file__).parent / "data" / "musicnn_reference.npz"
VGG_REFERENCE = Path(__file__).parent / "data" / "musicnn_vgg_reference.npz"
CFG16 = THESIS.with_(sample_rate=16_000, trim_samples=480_000, clip_samples=80_000)


@pytest.fixture(scope="module")
def tagger():
    return load_musicnn()


def test_the_port_gives_tensorflows_outputs_on_the_reference_spectrograms(tagger):
    """``tests/data/musicnn_reference.npz`` holds what the authors' own graph (TensorFlow, their
    checkpoint) computed for two spectrograms when the weights were converted."""
    ref = np.load(REFERENCE)
    spec = torch.from_numpy(ref["spec"].astype(np.float32))
    with torch.no_grad():
        ours = {"logits": tagger(spec), "penultimate": tagger.penultimate(spec), "pooled": tagger.pooled(spec)}
    for k, v in ours.items():
        theirs = ref[k]
        assert v.shape == theirs.shape, k
        assert np.abs(v.numpy() - theirs).max() <= 1e-4 * np.abs(theirs).max(), k
    assert not np.allclose(ref["logits"][0], ref["logits"][1], atol=0.1)      # the two inputs differ


def test_the_vgg_port_gives_tensorflows_outputs_and_pools_any_length():
    """The second tagger against its own TensorFlow reference (tags and the probe's 1,280 pooled
    values); its blocks pool before normalising (a sign trick): the plain order gives the same maps."""
    import torch.nn.functional as F

    vgg = load_musicnn(kind="vgg")
    ref = np.load(VGG_REFERENCE)
    spec = torch.from_numpy(ref["spec"].astype(np.float32))
    with torch.no_grad():
        ours = {"logits": vgg(spec), "pooled": vgg.pooled(spec)}
        x, plain = vgg.input_bn(spec.unsqueeze(1)), []
        for conv, bn, (k, stride) in zip(vgg.convs, vgg.bns, vgg.POOLS):
            x = F.max_pool2d(bn(F.relu(conv(x))), k, stride)
            plain.append(x)
        fast = vgg.blocks(spec)
        longer = vgg.pooled(torch.cat([spec, spec], 1))        # 6 s: the probe's clips are 5 s
    for k, v in ours.items():
        assert v.shape == ref[k].shape, k
        assert np.abs(v.numpy() - ref[k]).max() <= 1e-4 * np.abs(ref[k]).max(), k
    assert any((bn.gamma < 0).any() for bn in vgg.bns)         # the trick's other branch is exercised
    for a, b in zip(fast, plain):
        assert torch.allclose(a, b, atol=1e-5 * b.abs().max().item())
    assert longer.shape == (2, 1280) and torch.isfinite(longer).all()


def test_the_spectrogram_is_librosas_log_compressed_mel_power():
    """Centred frames with reflection, periodic Hann window, |STFT|^2, Slaney mel, log10(1 + 10^4 x)."""
    from thesis_lib.mel import mel_filterbank

    rng = np.random.default_rng(0)
    x = (0.3 * rng.standard_normal(4000)).astype(np.float32)
    spec = TaggerSpectrogram()(torch.from_numpy(x)[None])[0].numpy()
    padded = np.pad(x, 256, mode="reflect")
    win = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(512) / 512)
    frames = np.stack([padded[i * 256:i * 256 + 512] * win for i in range(1 + len(x) // 256)])
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    mel = power @ mel_filterbank(16_000, 512, 96, fmin=0.0).numpy().T
    expected = np.log10(10_000 * mel.astype(np.float16).astype(np.float64) + 1)
    assert spec.shape == (1 + len(x) // 256, 96)
    assert np.allclose(spec, expected, rtol=2e-3, atol=2e-3)


def test_shipped_weights_are_checked_and_a_damaged_copy_is_refused(tmp_path, monkeypatch):
    assert musicnn.WEIGHTS.is_file() and musicnn.WEIGHTS.stat().st_size > 3_000_000
    assert musicnn.VGG_WEIGHTS.is_file() and type(load_musicnn(kind="vgg")).__name__ == "MusicnnVGG"
    with pytest.raises(ValueError, match="unknown tagger 'vggish'"):
        load_musicnn(kind="vggish")
    with pytest.raises(PretrainedError, match="missing"):
        load_musicnn(tmp_path / "nothing.pt")
    damaged = tmp_path / "musicnn-msd.pt"
    shutil.copy(musicnn.WEIGHTS, damaged)
    with open(damaged, "r+b") as fh:
        fh.seek(2_000_000)
        fh.write(b"\x00" * 64)
    monkeypatch.setattr(musicnn, "WEIGHTS", damaged)
    with pytest.raises(PretrainedError, match=str(damaged)):
        load_musicnn(damaged)


def test_the_probe_learns_a_separable_set_and_keeps_the_tagger_frozen(tagger):
    x, y = red_and_blue_noise(8, CFG16.clip_samples)
    probe = MusicnnProbe(2, CFG16, tagger=tagger)
    before = {k: v.clone() for k, v in probe.tagger.state_dict().items()}
    probe.train().fit(x[::2], y[::2])
    assert not probe.tagger.training and not probe.training
    assert all(torch.equal(v, before[k]) for k, v in probe.tagger.state_dict().items())
    assert not any(p.requires_grad for p in probe.tagger.parameters())
    assert set(probe.state_dict()) == {"mean", "scale", "out.weight", "out.bias"}       # the tagger is the package's
    with torch.no_grad():
        pred = probe(torch.from_numpy(x[1::2])).argmax(1).numpy()
    assert (pred == y[1::2]).all()
    assert probe.features(torch.from_numpy(x[:2])).shape == (2, 1506)
    vgg = MusicnnProbe(2, CFG16, kind="vgg").fit(x[::2], y[::2])
    assert vgg.n_features == 1280 and vgg.architecture()["tagger"] == musicnn.VGG_WEIGHTS.name
    with torch.no_grad():
        assert (vgg(torch.from_numpy(x[1::2])).argmax(1).numpy() == y[1::2]).all()
    assert vgg.feature_key() != probe.feature_key()           # a cache never mixes the two taggers


def test_the_probe_refuses_clips_of_another_rate():
    with pytest.raises(ValueError, match="16000 Hz, not 8000 Hz"):
        MusicnnProbe(2, THESIS)


def counting_probe_class() -> type:
    """A log-mel baseline whose features are cached like a tagger's; ``seen`` counts the clips it computed."""
    from thesis_lib.baseline import LogMelBaseline

    class Counting(LogMelBaseline):
        cache_features = True
        seen = 0

        def features(self, x):
            Counting.seen += len(x)
            return super().features(x)

    return Counting


def test_probe_features_of_a_prepared_collection_are_computed_once(tmp_path):
    """Cross-validation fits a probe on most clips of a collection four times and scores the
    rest: a tagger's features (0.1 s a clip) are computed once per clip and process, and
    again when the collection's file is replaced by a new preparation."""
    import os

    from thesis_lib.predict import clip_probabilities

    Counting = counting_probe_class()
    shape = (10, THESIS.clip_samples)

    def write(path, seed):
        clips = np.memmap(path, np.float32, "w+", shape=shape)
        clips[:] = 0.3 * np.random.default_rng(seed).standard_normal(shape)
        clips.flush()
        del clips
        return np.memmap(path, np.float32, "r", shape=shape)

    clips = write(tmp_path / "clips.f32", 0)
    probe = Counting(2)
    a = probe.clip_features(clips, rows=np.array([1, 3, 5]))
    assert Counting.seen == 3
    b = probe.clip_features(clips, rows=np.array([5, 1, 7]))
    assert Counting.seen == 4 and torch.equal(b[0], a[2]) and torch.equal(b[1], a[0])
    plain = probe.clip_features(np.array(clips), rows=np.array([1]))               # not a prepared file: no cache
    assert Counting.seen == 5 and torch.allclose(plain[0], a[0])
    probe.fit(clips, np.array([0, 1] * 5))
    rows = np.array([2, 9, 4])
    cached = clip_probabilities(probe, clips, 2, rows=rows)
    assert np.allclose(cached, clip_probabilities(probe, np.array(clips[rows]), 2), atol=1e-5)
    seen = Counting.seen
    fresh = write(tmp_path / "new.f32", 1)
    os.replace(tmp_path / "new.f32", tmp_path / "clips.f32")                        # prepared again
    clips = np.memmap(tmp_path / "clips.f32", np.float32, "r", shape=shape)
    again = probe.clip_features(clips, rows=np.array([1]))
    assert Counting.seen == seen + 1 and not torch.allclose(again[0], a[0])
    del fresh


def test_probe_features_are_kept_beside_the_collection_for_the_next_process(tmp_path, monkeypatch):
    """``train`` then ``crossval`` on one collection are two processes: the second reads the
    features the first computed (a file beside the clips) instead of hearing every clip again; a
    damaged file is computed again, and nothing is read for clips prepared anew."""
    import os

    from thesis_lib import baseline

    Counting = counting_probe_class()
    shape = (6, THESIS.clip_samples)
    clips = np.memmap(tmp_path / "clips.f32", np.float32, "w+", shape=shape)
    clips[:] = 0.3 * np.random.default_rng(0).standard_normal(shape)
    clips.flush()
    clips = np.memmap(tmp_path / "clips.f32", np.float32, "r", shape=shape)
    first = Counting(2).clip_features(clips, rows=np.array([0, 2, 4]))
    saved = list(tmp_path.glob("features-*.npz"))
    assert Counting.seen == 3 and len(saved) == 1
    monkeypatch.setattr(baseline, "_STORES", {})                                    # a new process
    again = Counting(2).clip_features(clips, rows=np.array([4, 0, 1]))
    assert Counting.seen == 4 and torch.equal(again[0], first[2]) and torch.equal(again[1], first[0])
    saved[0].write_bytes(b"not an npz")                                             # damaged
    monkeypatch.setattr(baseline, "_STORES", {})
    assert torch.allclose(Counting(2).clip_features(clips, rows=np.array([2]))[0], first[1])
    assert Counting.seen == 5
    os.utime(tmp_path / "clips.f32", ns=(1, 1))                                     # another preparation
    monkeypatch.setattr(baseline, "_STORES", {})
    Counting(2).clip_features(clips, rows=np.array([0]))
    assert Counting.seen == 6 and len(list(tmp_path.glob("features-*.npz"))) == 2


def test_a_checkpoint_names_its_tagger_and_the_previous_defaults_two_member_fusion_still_loads(tmp_path):
    """A fusion saved with musicnn's probe and the baseline only (``train``'s default before the VGG
    tagger joined) loads with those two members; a probe on tagger weights this version does not
    ship is refused by name."""
    from thesis_lib.baseline import LogMelBaseline
    from thesis_lib.checkpoint import CheckpointError, load_model, save_model
    from thesis_lib.fusion import LateFusion

    x, y = red_and_blue_noise(4, CFG16.clip_samples)
    old = LateFusion(2, CFG16, members={"tagger": MusicnnProbe(2, CFG16).fit(x, y),
                                        "baseline": LogMelBaseline(2, CFG16).fit(x, y)})
    save_model(old, ["red", "blue"], tmp_path / "old.pt")
    back, styles, _ = load_model(tmp_path / "old.pt")
    assert back.member_names == ("tagger", "baseline") and back.tagger.kind == "musicnn"
    with torch.no_grad():
        assert torch.allclose(back(torch.from_numpy(x)), old(torch.from_numpy(x)), atol=1e-5)
    vgg = MusicnnProbe(2, CFG16, kind="vgg").fit(x, y)
    save_model(vgg, ["red", "blue"], tmp_path / "vgg.pt")
    assert load_model(tmp_path / "vgg.pt")[0].kind == "vgg"
    ckpt = torch.load(tmp_path / "vgg.pt", weights_only=False)
    ckpt["architecture"]["tagger_sha256"] = "f" * 64
    torch.save(ckpt, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="musicnn-vgg-msd.pt"):
        load_model(tmp_path / "other.pt")
