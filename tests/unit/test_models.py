"""Every architecture takes 1-channel spectrograms of any length and emits one logit per class."""

from __future__ import annotations

import pytest
import torch

from knd.learning.models import MODEL_NAMES, build_model

LOGMEL_MODELS = [
    n
    for n in MODEL_NAMES
    if n
    not in ("egemaps_mlp", "egemaps_linear", "late_fusion", "embedding_head", "encoder_finetune")
]


@pytest.mark.parametrize("name", LOGMEL_MODELS)
def test_one_channel_input_gives_a_logit_per_class(name):
    torch.manual_seed(0)
    model = build_model(name, num_classes=7, width=8, dropout=0.1).eval()
    with torch.no_grad():
        short = model(torch.randn(2, 1, 64, 64))
        long = model(torch.randn(1, 1, 64, 160))
    assert short.shape == (2, 7)
    assert long.shape == (1, 7)
    assert torch.isfinite(short).all() and torch.isfinite(long).all()


def test_cpu_small_is_small_and_its_width_scales_it():
    narrow = sum(p.numel() for p in build_model("cpu_small", 8, width=8).parameters())
    wide = sum(p.numel() for p in build_model("cpu_small", 8, width=32).parameters())
    assert narrow < wide < 1_000_000


def test_cpu_small_output_does_not_depend_on_the_other_clips_in_the_batch():
    torch.manual_seed(0)
    model = build_model("cpu_small", 8, width=8).eval()
    x = torch.randn(5, 1, 64, 100)
    with torch.no_grad():
        together = model(x)
        alone = torch.cat([model(x[i : i + 1]) for i in range(5)])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)


def test_unknown_model_is_named_in_the_error():
    with pytest.raises(ValueError, match="resnet99"):
        build_model("resnet99", 8)


def test_plain_cnn_is_four_conv_blocks_of_w_2w_4w_4w_with_global_average_pooling():
    model = build_model("plain_cnn", 8, width=32)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 128, 128]
    assert all(c.kernel_size == (3, 3) for c in convs)
    pools = [m for m in model.modules() if isinstance(m, torch.nn.MaxPool2d)]
    assert len(pools) == 4
    assert model.classifier.in_features == 128


def _side(batch: int, frames: int) -> dict[str, torch.Tensor]:
    return {"prosody": torch.randn(batch, 4, frames), "egemaps": torch.randn(batch, 88)}


@pytest.mark.parametrize(
    "groups", [("prosody",), ("egemaps",), ("prosody", "egemaps")], ids=lambda g: "+".join(g)
)
def test_fused_cnn_reads_each_group_it_was_built_for_and_any_clip_length(groups):
    torch.manual_seed(0)
    shapes = {"prosody": (4,), "egemaps": (88,)}
    model = build_model("fused_cnn", 8, width=8, groups={g: shapes[g] for g in groups}).eval()
    with torch.no_grad():
        for frames in (64, 301):
            side = {g: v for g, v in _side(3, frames).items() if g in groups}
            logits = model(torch.randn(3, 1, 64, frames), **side)
            assert logits.shape == (3, 8) and torch.isfinite(logits).all()
        # The side groups reach the logits: changing one changes the output.
        x, side = (
            torch.randn(2, 1, 64, 100),
            {g: v for g, v in _side(2, 100).items() if g in groups},
        )
        other = {g: v + 3.0 for g, v in side.items()}
        assert not torch.allclose(model(x, **side), model(x, **other))
    missing = groups[0]
    with pytest.raises(ValueError, match=missing):
        model(torch.randn(2, 1, 64, 100), **{g: v for g, v in side.items() if g != missing})


def test_fused_cnn_without_side_groups_is_plain_cnn_sized():
    fused = build_model("fused_cnn", 8, width=32)
    plain = build_model("plain_cnn", 8, width=32)
    assert sum(p.numel() for p in fused.parameters()) == sum(p.numel() for p in plain.parameters())


@pytest.mark.parametrize("name", ["egemaps_mlp", "egemaps_linear"])
def test_functional_models_ignore_the_spectrogram_and_need_the_functionals(name):
    torch.manual_seed(0)
    model = build_model(name, 8, groups={"egemaps": (88,)}).eval()
    egemaps = torch.randn(4, 88)
    with torch.no_grad():
        a = model(torch.randn(4, 1, 64, 50), egemaps=egemaps)
        b = model(torch.randn(4, 1, 64, 90), egemaps=egemaps)
    assert a.shape == (4, 8)
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="egemaps"):
        build_model(name, 8)


def test_late_fusion_averages_the_cnns_and_the_linear_models_logits_by_its_weight():
    torch.manual_seed(0)
    x, egemaps = torch.randn(4, 1, 64, 50), torch.randn(4, 88)
    spec = {"name": "late_fusion", "fusion_weight": 0.25}
    model = build_model("late_fusion", 8, width=8, groups={"egemaps": (88,)}, spec=spec).eval()
    with torch.no_grad():
        fused = model(x, egemaps=egemaps)
        cnn, linear = model.cnn(x), model.linear(x, egemaps=egemaps)
    torch.testing.assert_close(fused, 0.25 * cnn + 0.75 * linear)
    with pytest.raises(ValueError, match="egemaps"):
        build_model("late_fusion", 8, spec=spec)


def test_the_model_table_names_every_model_and_a_builder_that_exists():
    import importlib

    from knd.config.architectures import ARCHITECTURES

    assert tuple(ARCHITECTURES) == MODEL_NAMES
    for name, arch in ARCHITECTURES.items():
        module, function = arch.builder.split(":")
        assert callable(getattr(importlib.import_module(module), function)), name


def test_config_checks_each_model_against_the_table():
    from knd.config.loading import load_config
    from knd.config.schema import ConfigError

    args = ["data=x", "model.name=fused_cnn", "model.groups=[prosody]"]
    with pytest.raises(ConfigError, match="fused_cnn needs logmel among its groups"):
        load_config("train", args)
    with pytest.raises(ConfigError, match="encoder_finetune needs model.encoder"):
        load_config("train", ["data=x", "model.name=encoder_finetune", "model.groups=[waveform]"])
    cfg = load_config("train", ["data=x", "model.name=fused_cnn", "model.groups=[logmel,egemaps]"])
    assert cfg.model.inputs == ("logmel", "egemaps")
