"""SelectNeurons: the highest and lowest mean maps over a batch, from inline images or a store."""

from __future__ import annotations

import torch

from dreamsuite.artifacts import open_store
from dreamsuite.backbones import get_backbone
from dreamsuite.clients.guide import GuideClient
from dreamsuite.images import load_image

LAYERS = ["block_6", "block_12"]


def _direct(pngs: list[bytes]) -> dict[str, torch.Tensor]:
    """Mean activation of every map over the batch, straight from the backbone."""
    backbone = get_backbone("efficientnet_lite0", device="cpu")
    total = {layer: 0.0 for layer in LAYERS}
    for png in pngs:
        acts = backbone.activations(load_image(png), LAYERS)
        for layer in LAYERS:
            total[layer] = total[layer] + acts[layer][0].mean(dim=(1, 2))
    return {layer: t / len(pngs) for layer, t in total.items()}


def test_selection_over_a_batch_matches_a_direct_computation(guide_torchserve, pngs):
    batch = list(pngs.values())
    with GuideClient(guide_torchserve.address) as client:
        backbone, selection = client.select(batch, "", LAYERS, top_k=5, bottom_k=3)
    means = _direct(batch)
    assert backbone == "efficientnet_lite0"
    for layer in LAYERS:
        m = means[layer]
        assert torch.allclose(selection.means[layer], m, atol=1e-5)
        top, bottom = selection.top[layer], selection.bottom[layer]
        assert len(top) == 5 and len(bottom) == 3
        # The chosen maps are the highest and lowest means (ties aside), highest first.
        assert m[top].min() >= torch.topk(m, 5).values.min() - 1e-6
        assert m[bottom].max() <= torch.topk(m, 3, largest=False).values.max() + 1e-6
        assert m[top].tolist() == sorted(m[top].tolist(), reverse=True)
    terms = {t.layer: t.channels for t in selection.maplist().terms}
    assert all(terms["block_6"][c] == 1.0 for c in selection.top["block_6"])
    assert all(terms["block_6"][c] == -1.0 for c in selection.bottom["block_6"])


def test_selection_from_an_artifact_store_prefix(guide_factory, tmp_path, pngs):
    store = open_store(tmp_path / "artifacts")
    for png in pngs.values():
        store.put(png)
    running = guide_factory("inprocess", artifacts=store.url)
    with GuideClient(running.address) as client:
        _, by_prefix = client.select([], "", LAYERS, top_k=4, bottom_k=0,
                                     prefix=store.url + "/")
        _, inline = client.select(list(pngs.values()), "", LAYERS, top_k=4, bottom_k=0)
    assert by_prefix.top == inline.top
