"""LighthouseConfig: field checks, planning math and suggestions."""

import pytest

from lighthouse_attn import LighthouseConfig


def test_defaults_are_the_papers_and_worked_example():
    cfg = LighthouseConfig()
    assert (cfg.num_levels, cfg.pooling_factor, cfg.topk, cfg.scorer) == (3, 4, 1536, "norm")
    assert cfg.num_tiles == 12
    assert cfg.gathered_length(98_304) == 6_144 + 12_288
    assert 1 / cfg.attention_flops_ratio(98_304) == pytest.approx(28.4, abs=0.05)
    assert cfg.level_counts(98_304) == [6144, 6144, 6144]


@pytest.mark.parametrize("L,p,K,N,S", [(3, 4, 4096, 262_144, 16_384 + 32_768),
                                       (4, 4, 4096, 1_048_576, 65_536),
                                       (3, 2, 1536, 98_304, 24_576 + 6_144)])
def test_paper_configs(L, p, K, N, S):
    assert LighthouseConfig(num_levels=L, pooling_factor=p, topk=K).gathered_length(N) == S


@pytest.mark.parametrize("kw,match", [
    (dict(topk=100), r"topk must be a positive multiple of 128.*try topk=128"),
    (dict(topk=1500), r"multiple of 128.*try topk=1536"),
    (dict(topk=0), "multiple of 128"),
    (dict(num_levels=0), "num_levels must be an integer >= 1"),
    (dict(pooling_factor=1), "pooling_factor must be an integer >= 2"),
    (dict(scorer="attention"), "unknown scorer 'attention'; choose one of 'norm', 'dilated'"),
    (dict(gqa="group"), "unknown gqa"),
    (dict(short_seq="skip"), "unknown short_seq"),
    (dict(backend="cuda"), "unknown backend"),
    (dict(dilation=0), "dilation must be"),
    (dict(num_levels=2.0), "num_levels must be an integer"),
])
def test_bad_fields(kw, match):
    with pytest.raises(ValueError, match=match):
        LighthouseConfig(**kw)


def test_validate_suggests_topk_and_seq_len():
    cfg = LighthouseConfig(num_levels=3, pooling_factor=4, topk=1536)
    with pytest.raises(ValueError, match=r"multiple of 192.*98304 or 98496"):
        cfg.validate(98_305)
    with pytest.raises(ValueError, match=r"keep seq_len and use topk=1024"):
        cfg.validate(65_536)  # 4096 coarse entries: 12 tiles do not divide them
    with pytest.raises(ValueError, match="positive integer"):
        cfg.validate(0)
    assert cfg.min_seq_len == 128 * 12 * 16


def test_one_level_accepts_any_length():
    cfg = LighthouseConfig(num_levels=1)
    cfg.validate(7)
    assert cfg.gathered_length(7) == 7 and cfg.attention_flops_ratio(7) == 1.0


def test_valid_topks_all_validate():
    cfg = LighthouseConfig(num_levels=3, pooling_factor=4)
    ks = cfg.valid_topks(98_304)
    assert 1536 in ks and 128 in ks
    for k in ks:
        LighthouseConfig(num_levels=3, pooling_factor=4, topk=k).validate(98_304)


def test_round_trip_dict():
    cfg = LighthouseConfig(topk=256, gqa="shared")
    assert LighthouseConfig(**cfg.to_dict()) == cfg


def test_advice_never_repeats_the_current_setting():
    cfg = LighthouseConfig(num_levels=3, pooling_factor=4, topk=128, short_seq="dense")
    with pytest.raises(ValueError) as err:
        cfg.validate(1000)
    assert "short_seq='dense'" not in str(err.value)
    with pytest.raises(ValueError) as err:
        LighthouseConfig(num_levels=3, pooling_factor=4, topk=128).validate(1000)
    assert "short_seq='dense'" in str(err.value) and "topk=128" not in str(err.value)
