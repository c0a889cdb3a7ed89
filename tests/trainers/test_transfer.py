"""DeepSpectrumLite's two-phase transfer learning on real ESC-10 features: phase 1 trains the head alone, phase 2
also the last N blocks at a tenth of the learning rate; the weights come from a local file."""

import pytest
import torch

from asc_search import UserInputError
from asc_search.search_spaces import build_model
from asc_search.trainers import TrainSettings, fit, load_pretrained, two_phase_transfer


def _same(a: dict, b: dict, prefix: str) -> bool:
    keys = [k for k in a if k.startswith(prefix)]
    return bool(keys) and all(torch.equal(a[k], b[k]) for k in keys)


def test_two_phases_train_the_head_then_the_last_block(esc10_split, tmp_path):
    data, genome, features, train, val, norm = esc10_split
    torch.manual_seed(0)
    source = build_model(genome, data.n_classes)
    fit(source, features, data.labels, train, val, norm, TrainSettings(epochs=1, batch_size=16))
    pretrained = {k: v.clone() for k, v in source.state_dict().items()}
    # a classifier for another class count: its last layer has another shape and stays freshly initialised
    last = [k for k in pretrained if k.startswith("head.") and k.endswith(".weight")][-1]
    pretrained[last] = torch.zeros(5, *pretrained[last].shape[1:])
    torch.save(pretrained, tmp_path / "backbone.pt")
    torch.manual_seed(1)
    model = build_model(genome, data.n_classes)
    p1, p2, report = two_phase_transfer(model, tmp_path / "backbone.pt", features, data.labels, train, val, norm,
                                        TrainSettings(epochs=1, batch_size=16, learning_rate=1e-2), unfreeze_last=1)
    assert report["skipped_shape"] == [last] and len(report["loaded"]) == len(pretrained) - 1
    # phase 1: every feature block (weights and batch-norm statistics) is the pretrained one; the head learned
    assert _same(p1.state_dict, pretrained, "features.")
    assert not _same(p1.state_dict, pretrained, "head.")
    # phase 2: the first block is still frozen, the last one was fine-tuned
    assert _same(p2.state_dict, pretrained, "features.0.")
    assert not _same(p2.state_dict, pretrained, "features.1.")
    assert all(p.requires_grad for p in model.parameters())  # nothing is left frozen afterwards


def test_pretrained_weights_must_be_a_local_matching_state_dict(esc10_small, tmp_path):
    _, genome, _ = esc10_small
    model = build_model(genome, 10)
    with pytest.raises(UserInputError, match="nowhere.pt do not exist; name a local state-dict file"):
        load_pretrained(model, tmp_path / "nowhere.pt")
    torch.save({"other.weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(UserInputError, match="no tensor of .*other.pt matches the model"):
        load_pretrained(model, tmp_path / "other.pt")
    with pytest.raises(UserInputError, match="unfreeze_last must be in \\[0, 2\\]"):
        two_phase_transfer(model, tmp_path / "other.pt", None, None, None, None, None, TrainSettings(),
                           unfreeze_last=5)
