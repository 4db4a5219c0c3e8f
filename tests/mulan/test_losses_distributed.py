"""Two gloo processes, each with half the batch, reproduce the single-process loss and gradients."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from musiclm_pytorch.mulan import DecoupledContrastiveLoss, SigmoidContrastiveLoss, SoftmaxContrastiveLoss

LOSSES = {
    "softmax": SoftmaxContrastiveLoss,
    "dcl": DecoupledContrastiveLoss,
    "sigmoid": SigmoidContrastiveLoss,
}


def _setup(b: int = 8, d_in: int = 12, d: int = 6):
    g = torch.Generator().manual_seed(0)
    x_audio, x_text = torch.randn(b, d_in, generator=g), torch.randn(b, d_in, generator=g)
    w_audio, w_text = torch.randn(d, d_in, generator=g), torch.randn(d, d_in, generator=g)
    return x_audio, x_text, w_audio, w_text


def _step(name, x_audio, x_text, w_audio, w_text):
    w_audio = w_audio.clone().requires_grad_(True)
    w_text = w_text.clone().requires_grad_(True)
    loss_fn = LOSSES[name]()
    loss = loss_fn(F.normalize(x_audio @ w_audio.t(), dim=-1), F.normalize(x_text @ w_text.t(), dim=-1))
    loss.backward()
    grads = [w_audio.grad, w_text.grad, *[p.grad for p in loss_fn.parameters()]]
    return loss.detach(), grads


def _worker(rank: int, world: int, port: int, name: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        x_audio, x_text, w_audio, w_text = _setup()
        half = x_audio.shape[0] // world
        sl = slice(rank * half, (rank + 1) * half)
        loss, grads = _step(name, x_audio[sl], x_text[sl], w_audio, w_text)
        # what DDP / Accelerate do: average the loss for logging and the gradients for the update
        dist.all_reduce(loss)
        for grad in grads:
            dist.all_reduce(grad)
        if rank == 0:
            torch.save({"loss": loss / world, "grads": [g / world for g in grads]}, out)
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_two_process_gather_equals_joint_batch(tmp_path, name, free_port):
    out = str(tmp_path / "rank0.pt")
    mp.spawn(_worker, args=(2, free_port, name, out), nprocs=2, join=True)
    got = torch.load(out, weights_only=True)
    ref_loss, ref_grads = _step(name, *_setup())
    torch.testing.assert_close(got["loss"], ref_loss, rtol=1e-5, atol=1e-6)
    assert len(got["grads"]) == len(ref_grads)
    for g, r in zip(got["grads"], ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)
