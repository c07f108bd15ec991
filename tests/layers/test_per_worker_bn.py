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
