"""gnrepro.models.build: every key of the composed config reaches the model it builds (the only place
where config keys meet layers), checked on the built modules themselves."""
import pytest
import torch
from torch import nn

from gnrepro.layers.convs import WSConv2d
from gnrepro.layers.per_worker_bn import PerWorkerBatchNorm2d
from gnrepro.models.build import build_model
from gnrepro.models.vgg import VGG
from gnrepro.settings.validate import validate


def _built(compose_cfg, *overrides, **kw):
    cfg = compose_cfg(*overrides)
    validate(cfg)
    return build_model(cfg, **{"num_classes": 7, "in_channels": 1, **kw})


def test_resnet_gets_classes_channels_stem_and_depth_from_the_config(compose_cfg):
    model = _built(compose_cfg, "model=resnet14", "norm=gn")
    assert model.fc.out_features == 7 and model.conv1.in_channels == 1
    assert model.conv1.kernel_size == (3, 3) and isinstance(model.maxpool, nn.Identity)  # digits: small input
    assert [len(stage) for stage in (model.layer1, model.layer2, model.layer3, model.layer4)] == [1, 1, 1, 1]
    full = _built(compose_cfg, "model=resnet50", "norm=gn", "data=imagenet", "data.root=/d", in_channels=3)
    assert full.conv1.kernel_size == (7, 7) and isinstance(full.maxpool, nn.MaxPool2d)


def test_workers_hosted_by_this_process_override_the_configured_workers(compose_cfg):
    """Under torchrun each process hosts its share of ``workers``: build_model(workers=k) gives every BN
    k per-worker blocks, and without it every BN gets all of cfg.workers."""
    hosted = _built(compose_cfg, "model=resnet14", "norm=bn", "workers=8", workers=2)
    assert {m.workers for m in hosted.modules() if isinstance(m, PerWorkerBatchNorm2d)} == {2}
    alone = _built(compose_cfg, "model=resnet14", "norm=bn", "workers=8")
    assert {m.workers for m in alone.modules() if isinstance(m, PerWorkerBatchNorm2d)} == {8}


def test_conv_options_reach_every_ws_conv(compose_cfg):
    model = _built(compose_cfg, "model=resnet14", "norm=gn_ws", "conv.eps=0.001")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(isinstance(m, WSConv2d) and m.eps == 0.001 for m in convs)


def test_vgg_gets_its_classifier_width_pool_size_and_dropout(compose_cfg):
    model = _built(compose_cfg, "model=vgg16", "norm=gn", "model.classifier_width=24", "model.pool_size=2",
                   "model.dropout=0.25")
    assert isinstance(model, VGG) and model.avgpool.output_size == 2
    linear = [m for m in model.classifier if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [(512 * 4, 24), (24, 24), (24, 7)]
    assert [m.p for m in model.classifier if isinstance(m, nn.Dropout)] == [0.25, 0.25]
    assert all(m.ceil_mode for m in model.features if isinstance(m, nn.MaxPool2d))  # digits: small input
    assert model.features[0].in_channels == 1


def test_vgg_defaults_are_torchvisions_vgg16():
    """VGG(norm, conv) with no other argument is torchvision's vgg16 (1000 classes, 4096-wide classifier,
    7x7 pool, dropout 0.5, floor-mode pools); built on the meta device, as shapes are all that matter."""
    import torchvision

    with torch.device("meta"):
        ours = VGG(lambda c: None, lambda *a, **k: nn.Conv2d(*a, **k))
        ref = torchvision.models.vgg16(weights=None)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    assert ours.avgpool.output_size == 7
    assert [m.p for m in ours.classifier if isinstance(m, nn.Dropout)] == [0.5, 0.5]
    assert not any(m.ceil_mode for m in ours.features if isinstance(m, nn.MaxPool2d))
