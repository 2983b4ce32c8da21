"""Label sharding (in this process): the shards, run in lockstep, give the unsharded scan's report."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from _tiny import TemplateNet, clean_images
from _zoo import SMALL, one_thread  # noqa: F401  (a fixture)

from neuralcleanse.scan import NeuralCleanse
from neuralcleanse.sharding import LocalShards, ShardedSearch, split_rows


def test_split_rows_makes_contiguous_blocks_of_near_equal_size():
    assert split_rows(7, 3) == [[0, 1, 2], [3, 4], [5, 6]]
    assert split_rows(2, 5) == [[0], [1]]


@pytest.mark.usefixtures("one_thread")
def test_sharded_scan_gives_the_unsharded_flagged_labels_norms_and_masks():
    shards = 4  # blocks of 2, 2, 1 and 1 labels
    model = TemplateNet(backdoor=True)
    images, labels = clean_images(per_label=10)
    config = replace(SMALL, searches=2)  # the restarts continue the generator: sharded too
    want = NeuralCleanse(model, config).scan(images, labels, seed=7)
    got = NeuralCleanse(model, config, search=ShardedSearch(LocalShards(shards))).scan(images, labels, seed=7)
    assert got.flagged == want.flagged == [5]
    torch.testing.assert_close(
        torch.tensor([r.mask_l1 for r in got.labels]), torch.tensor([r.mask_l1 for r in want.labels])
    )
    assert [r.epochs for r in got.labels] == [r.epochs for r in want.labels]
    torch.testing.assert_close(got.masks, want.masks)
    assert all(p.requires_grad for p in model.parameters())  # every shard's frozen() unwound
