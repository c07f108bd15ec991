"""The per-worker layout contract: the sampler's batch, folded by the layer, gives every worker
exactly its own images (checked against torch's BatchNorm2d on each worker's images, in float64)."""
import pytest
import torch
from torch import nn

from gnrepro.layers.per_worker_bn import PerWorkerBatchNorm2d, fold, interleave, worker_of
from gnrepro.data.sampling import StepBatchSampler


def test_interleave_follows_worker_of():
    per_worker = [[f"w{k}i{i}" for i in range(3)] for k in range(4)]
    batch = interleave(per_worker)
    assert [batch[p] for p in range(12)] == [per_worker[worker_of(p, 4)][p // 4] for p in range(12)]
    assert batch[:5] == ["w0i0", "w1i0", "w2i0", "w3i0", "w0i1"]


@pytest.mark.parametrize("workers, hosted", [(3, range(3)), (4, range(2, 4))])
def test_sampler_batch_folded_by_the_layer_normalizes_each_worker_alone(workers, hosted):
    num_images, batch, channels = 40, 2, 3
    images = torch.randn(num_images, channels, 2, 3, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    images = images * torch.arange(1, num_images + 1, dtype=torch.float64).view(-1, 1, 1, 1)  # each worker its own stats
    process = StepBatchSampler(num_images, batch, workers, seed=3, hosted=hosted)
    # The reference for worker k's images: a sampler that hosts worker k alone (no layout involved).
    alone = {k: list(StepBatchSampler(num_images, batch, workers, seed=3, hosted=range(k, k + 1))) for k in hosted}
    n = len(hosted)
    layer = PerWorkerBatchNorm2d(channels, workers=n).double().train()
    for step, indices in enumerate(process):
        assert [hosted[worker_of(p, n)] for p in range(len(indices))] == [
            next(k for k in hosted if i in alone[k][step]) for i in indices]
        x = images[indices]
        folded = fold(x, n)
        for j, k in enumerate(hosted):  # fold's channel block j holds exactly hosted worker k's images
            block = folded[:, j * channels:(j + 1) * channels]
            assert torch.equal(block, images[alone[k][step]])
        out = layer(x)
        row = {i: out[p] for p, i in enumerate(indices)}
        for k in hosted:
            reference = nn.BatchNorm2d(channels, dtype=torch.float64).train()(images[alone[k][step]])
            torch.testing.assert_close(torch.stack([row[i] for i in alone[k][step]]), reference, rtol=0, atol=1e-12)
    # And not the same as one BN over the whole process batch (the test can fail).
    whole = nn.BatchNorm2d(channels, dtype=torch.float64).train()(x)
    assert not torch.allclose(whole, out, atol=1e-3)


def test_a_batch_that_does_not_split_over_the_workers_names_both_numbers():
    from gnrepro.layers.per_worker_bn import split

    with pytest.raises(ValueError) as err:
        split(torch.zeros(6, 2, 1, 1), 4)
    assert str(err.value) == "a batch of 6 images cannot be split evenly over 4 workers"


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_one_step_counts_one_batch_and_uses_the_unbiased_variance_at_two_values(layout):
    """Each training step adds 1 to num_batches_tracked (BRN's relaxation schedule counts on it), and
    the running variance takes F.batch_norm's unbiased variance n/(n-1) also at n = 2 values per
    worker and channel (1 image x 2 positions per worker), in both layouts."""
    torch.manual_seed(4)
    layer = PerWorkerBatchNorm2d(3, workers=2, momentum=1.0)  # momentum 1: the running stats are this step's
    x = torch.randn(2, 3, 1, 2).to(memory_format=layout)
    layer(x)
    assert int(layer.num_batches_tracked) == 1
    per_worker = [x[k].double().flatten(1) for k in range(2)]  # worker k: image k, 2 values per channel
    expected_var = sum(v.var(1, unbiased=True) for v in per_worker) / 2
    torch.testing.assert_close(layer.running_var.double(), expected_var, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(layer.running_mean.double(), sum(v.mean(1) for v in per_worker) / 2,
                               rtol=1e-5, atol=1e-6)


def test_one_worker_by_default_is_plain_batchnorm():
    layer = PerWorkerBatchNorm2d(4)
    assert layer.workers == 1
    x = torch.randn(3, 4, 2, 2)
    torch.testing.assert_close(layer(x), nn.BatchNorm2d(4)(x), rtol=0, atol=0)
