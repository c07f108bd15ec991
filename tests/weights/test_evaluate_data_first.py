"""gnrepro.evaluate reads the data folder before it fetches any weights (issue 25): a wrong
data.root costs one line, not a download of 100+ MB first."""
import pytest
from hydra import compose, initialize_config_dir

from gnrepro.errors import UserError
from gnrepro.evaluate import check_published, expected_mean
from gnrepro.resources import CONFIGS
from gnrepro.weights import formats
from gnrepro.weights.catalog import CATALOG


@pytest.mark.parametrize("weights", ["R-50-GN", "tv-resnet50", "https://example.org/model.pth"])
def test_a_missing_data_root_is_refused_before_the_download(tmp_path, monkeypatch, weights):
    monkeypatch.setattr("gnrepro.evaluate.resolve", lambda *a, **k: pytest.fail("reached the download"))
    overrides = [f"weights={weights}", "data=imagenet", f"data.root={tmp_path / 'nowhere'}"]
    if weights == "R-50-GN":
        overrides += ["norm=gn"]
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=overrides)
    with pytest.raises(UserError, match=r"data.root=.*nowhere does not exist"):
        check_published(cfg)


def test_the_publishers_mean_is_known_up_front_where_it_can_be():
    assert expected_mean(CATALOG["R-50-GN"], "auto") == formats.CAFFE2_INPUT.rgb_mean01
    assert expected_mean(CATALOG["tv-resnet50"], "auto") == formats.TORCH_INPUT.rgb_mean01
    assert expected_mean(None, "auto") is None and expected_mean(None, "gnrepro") is None  # the file tells
