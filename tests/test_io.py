import json

import pytest
import torch

from neuralcleanse.atomic import atomic_write_text
from neuralcleanse.models import ARCHITECTURES, build_model
from neuralcleanse.store.model_dir import (
    METADATA_FILE,
    WEIGHTS_FILE,
    ModelFileError,
    load_saved_model,
    save_model,
)
from neuralcleanse.triggers import Trigger


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_reference_models_take_01_images_and_return_logits(arch):
    spec = ARCHITECTURES[arch]
    out = build_model(arch)(torch.rand(2, *spec.input_shape))
    assert out.shape == (2, spec.num_classes)


def test_round_trip_is_bit_identical(tmp_path):
    torch.manual_seed(0)
    model = build_model("mnist").eval()
    trigger = Trigger.patch((1, 28, 28), 4, spec="square")
    save_model(
        tmp_path / "m", model, {"architecture": "mnist", "num_classes": 10, "clean_accuracy": 0.5}, [(trigger, 7)]
    )
    loaded = load_saved_model(tmp_path / "m")
    x = torch.rand(8, 1, 28, 28)
    assert torch.equal(model(x), loaded.model(x))
    assert loaded.metadata["clean_accuracy"] == 0.5 and "versions" in loaded.metadata
    ((t, target),) = loaded.triggers
    assert target == 7 and torch.equal(t.mask, trigger.mask) and t.spec == "square"


def test_corrupt_and_mismatched_files_get_one_line_errors(tmp_path):
    save_model(tmp_path / "m", build_model("mnist"), {"architecture": "mnist", "num_classes": 10})
    weights = tmp_path / "m" / WEIGHTS_FILE
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="corrupt or truncated weights"):
        load_saved_model(tmp_path / "m")
    save_model(tmp_path / "g", build_model("gtsrb"), {"architecture": "gtsrb", "num_classes": 43})
    meta = json.loads((tmp_path / "g" / METADATA_FILE).read_text())
    meta["architecture"] = "mnist"
    (tmp_path / "g" / METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="weights do not match architecture 'mnist'"):
        load_saved_model(tmp_path / "g")
    with pytest.raises(ModelFileError, match="not a neuralcleanse model directory"):
        load_saved_model(tmp_path)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "report.json"

    class Boom(Exception):
        pass

    from neuralcleanse.atomic import atomic_write

    def fail(tmp):
        tmp.write_text("half")
        raise Boom

    with pytest.raises(Boom):
        atomic_write(target, fail)
    assert list(tmp_path.iterdir()) == []
    atomic_write_text(target, "done")
    assert target.read_text() == "done" and len(list(tmp_path.iterdir())) == 1
